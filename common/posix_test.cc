#include "common/posix.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include <gtest/gtest.h>

namespace kiln {
namespace {

TEST(PosixTest, WriteFileAtomicallyReplacesContentAndLeavesNoTemp) {
  std::string dir = ::testing::TempDir() + "/posix_test_atomic";
  ASSERT_TRUE(RemoveTree(dir).ok());
  ASSERT_TRUE(MakeDirectories(dir + "/tmp").ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/f", "one", dir + "/tmp", 0644).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/f", "two", dir + "/tmp", 0644).ok());
  EXPECT_EQ(*ReadFileToString(dir + "/f"), "two");
  EXPECT_TRUE(std::filesystem::is_empty(dir + "/tmp"));
  ASSERT_TRUE(RemoveTree(dir).ok());
}

TEST(PosixTest, ErrorsNameTheCallAndPath) {
  auto missing = ReadFileToString("/nonexistent/kiln");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("open /nonexistent/kiln"), absl::string_view::npos);
}


// Two ends of a SOCK_SEQPACKET pair, closed at the end of the test.
struct SocketPair {
  SocketPair() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds), 0);
    a = UniqueFd(fds[0]);
    b = UniqueFd(fds[1]);
  }
  UniqueFd a, b;
};

bool SameFile(int x, int y) {
  struct stat sx, sy;
  return fstat(x, &sx) == 0 && fstat(y, &sy) == 0 && sx.st_dev == sy.st_dev && sx.st_ino == sy.st_ino;
}

TEST(PosixTest, ADescriptorTravelsWithItsMessage) {
  SocketPair pair;
  UniqueFd passed(open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_EQ(SendWithDescriptor(pair.a.get(), "x", 1, passed.get()), 1);
  char byte = 0;
  int received = -1;
  ASSERT_EQ(ReceiveWithDescriptor(pair.b.get(), &byte, 1, &received), 1);
  UniqueFd owned(received);
  EXPECT_EQ(byte, 'x');
  ASSERT_GE(received, 0);
  EXPECT_NE(received, passed.get());
  EXPECT_TRUE(SameFile(received, passed.get()));
  EXPECT_NE(fcntl(received, F_GETFD) & FD_CLOEXEC, 0);
  // Without one, and after the peer closed.
  ASSERT_EQ(SendWithDescriptor(pair.a.get(), "y", 1, -1), 1);
  ASSERT_EQ(ReceiveWithDescriptor(pair.b.get(), &byte, 1, &received), 1);
  EXPECT_EQ(received, -1);
  pair.a.Reset();
  EXPECT_EQ(ReceiveWithDescriptor(pair.b.get(), &byte, 1, &received), 0);
  EXPECT_EQ(received, -1);
}

// Sends one byte with `count` descriptors of /dev/null, as a peer that
// ignores kMaxPassedDescriptors would (plain sendmsg); returns what sendmsg
// returned.
ssize_t SendDevNulls(int socket, int count) {
  std::vector<int> sent(count);
  for (int& fd : sent) fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  char byte = 'z';
  struct iovec io = {&byte, 1};
  std::vector<char> control(CMSG_SPACE(count * sizeof(int)));
  struct msghdr message = {};
  message.msg_iov = &io;
  message.msg_iovlen = 1;
  message.msg_control = control.data();
  message.msg_controllen = control.size();
  struct cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(count * sizeof(int));
  std::memcpy(CMSG_DATA(header), sent.data(), count * sizeof(int));
  const ssize_t n = sendmsg(socket, &message, 0);
  for (int fd : sent) close(fd);
  return n;
}

int OpenDescriptors() {
  int count = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++count;
  return count;
}

// A peer that sends more descriptors than asked for gets one through; the
// others are closed, not left open in the receiver.
TEST(PosixTest, ExtraDescriptorsAreClosedNotLeaked) {
  SocketPair pair;
  ASSERT_EQ(SendDevNulls(pair.a.get(), 3), 1);
  char byte = 0;
  const int before = OpenDescriptors();
  int received = -1;
  ASSERT_EQ(ReceiveWithDescriptor(pair.b.get(), &byte, 1, &received), 1);
  ASSERT_GE(received, 0);
  EXPECT_EQ(OpenDescriptors(), before + 1) << "the extra descriptors stayed open";
  close(received);
}

// Several descriptors travel in the order given. A receiver keeps at most
// kMaxPassedDescriptors of a message and closes the rest, however many a
// peer sends; a sender refuses to send more.
TEST(PosixTest, SeveralDescriptorsTravelInOrderUpToTheLimit) {
  SocketPair pair;
  UniqueFd null(open("/dev/null", O_RDONLY | O_CLOEXEC));
  UniqueFd root(open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  const int in_order[] = {root.get(), null.get(), root.get()};
  ASSERT_EQ(SendWithDescriptors(pair.a.get(), "x", 1, in_order), 1);
  char byte = 0;
  std::vector<UniqueFd> received;
  ASSERT_EQ(ReceiveWithDescriptors(pair.b.get(), &byte, 1, &received), 1);
  ASSERT_EQ(received.size(), 3u);
  for (size_t i = 0; i < received.size(); ++i) EXPECT_TRUE(SameFile(received[i].get(), in_order[i])) << i;
  received.clear();

  for (int sent : {static_cast<int>(kMaxPassedDescriptors) + 1, static_cast<int>(3 * kMaxPassedDescriptors)}) {
    SCOPED_TRACE(sent);
    ASSERT_EQ(SendDevNulls(pair.a.get(), sent), 1);
    const int before = OpenDescriptors();
    ASSERT_EQ(ReceiveWithDescriptors(pair.b.get(), &byte, 1, &received), 1);
    EXPECT_EQ(received.size(), kMaxPassedDescriptors);
    EXPECT_EQ(OpenDescriptors(), before + static_cast<int>(kMaxPassedDescriptors)) << "the extra ones stayed open";
    received.clear();
  }

  const std::vector<int> too_many(kMaxPassedDescriptors + 1, null.get());
  errno = 0;
  EXPECT_EQ(SendWithDescriptors(pair.a.get(), "y", 1, too_many), -1);
  EXPECT_EQ(errno, EINVAL);
}

}  // namespace
}  // namespace kiln
