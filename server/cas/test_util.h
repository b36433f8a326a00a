// Helpers shared by the CAS tests: a fresh directory per test, removed after.
#ifndef KILN_SERVER_CAS_TEST_UTIL_H_
#define KILN_SERVER_CAS_TEST_UTIL_H_

#include <stdlib.h>

#include <string>

#include <gtest/gtest.h>

#include "common/posix.h"

namespace kiln::cas {

class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = ::testing::TempDir() + "/kiln-test-XXXXXX";
    path_ = mkdtemp(pattern.data());
  }
  ~ScratchDir() { (void)RemoveTree(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace kiln::cas

#endif  // KILN_SERVER_CAS_TEST_UTIL_H_
