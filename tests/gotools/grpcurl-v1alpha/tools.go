//go:build tools

// Package tools records the commands this module builds, so that go.sum
// holds every module they need.
package tools

import _ "github.com/fullstorydev/grpcurl/cmd/grpcurl"
