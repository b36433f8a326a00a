// Whether a directory is on an ext2/3/4 filesystem that has no journal.
//
// Without a journal, ext4 will not reuse an inode freed within the last
// minute (five or more while its inode table block is still dirty): each new
// file or directory is found by scanning past every recently freed inode of
// its block group. A worker creates and removes a dozen inodes per action, so
// under load each create there cost 0.15-0.7 ms of CPU against ~0.03 ms on a
// journaled ext4 of the same machine (docs/benchmarks.md, "Inodes on an ext4
// without a journal"). The worker warns at start when its state dir is on one.
#ifndef KILN_COMMON_EXT_JOURNAL_H_
#define KILN_COMMON_EXT_JOURNAL_H_

#include <string>

#include "absl/status/statusor.h"

namespace kiln {

// False for any other filesystem, and for ext3/ext4 with a journal (a jbd2
// journal listed under /proc/fs/jbd2 for the directory's block device).
absl::StatusOr<bool> IsExtWithoutJournal(const std::string& dir);

}  // namespace kiln

#endif  // KILN_COMMON_EXT_JOURNAL_H_
