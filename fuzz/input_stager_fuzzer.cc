// The input staging planner (server/exec/input_stager.h) on random DAGs of
// Directory messages stored in a real BlobStore, with random security limits
// (files, directories, bytes, depth), staged into a real directory.
//
// The oracle expands the DAG naively, as a tree, and holds the stager to it:
// a staging that succeeds is within every limit and put on disk exactly what
// the messages say (each symlink's text, each file's size, nothing more); a
// RESOURCE_EXHAUSTED means the tree really is over a limit.
#include <dirent.h>
#include <fcntl.h>
#include <fuzzer/FuzzedDataProvider.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/posix.h"
#include "server/cas/blob_store.h"
#include "server/exec/input_stager.h"

namespace {

using kiln::Digest;
using kiln::rev2::Directory;

struct World {
  std::string root;
  std::unique_ptr<kiln::cas::BlobStore> cas;
  std::unique_ptr<kiln::exec::InputStager> stager;
  std::vector<Digest> files;  // stored file blobs
};

World* TheWorld() {
  static World* world = [] {
    auto* w = new World;
    // tmpfs when there is one: every blob is fsynced.
    std::string base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string templ = base + "/kiln-stager-fuzz-XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) abort();
    w->root = templ;
    auto cas = kiln::cas::BlobStore::Open({w->root + "/cas", int64_t{1} << 30, int64_t{1} << 20});
    if (!cas.ok()) abort();
    w->cas = *std::move(cas);
    auto stager = kiln::exec::InputStager::Create(w->cas.get(), w->root + "/exec-cache");
    if (!stager.ok()) abort();
    w->stager = *std::move(stager);
    for (const char* content : {"", "a", "hello", "0123456789abcdef", "#!/bin/sh\nexit 0\n"}) {
      Digest digest = Digest::Of(content);
      if (!w->cas->Put(digest, content).ok()) abort();
      w->files.push_back(digest);
    }
    std::atexit([] { (void)kiln::RemoveTree(TheWorld()->root); });
    return w;
  }();
  return world;
}

std::string Name(FuzzedDataProvider& in) {
  static const char* const kNames[] = {"a", "b", "c", "d", "e", "f", ".", "..", "x/y", "", "ok"};
  return kNames[in.ConsumeIntegralInRange<size_t>(0, std::size(kNames) - 1)];
}

std::string Target(FuzzedDataProvider& in) {
  static const char* const kTargets[] = {"a", "../a", "../../b", "/etc/passwd", "./x", "..",
                                         "a/../..", "b/./c", "../.."};
  if (in.ConsumeBool()) return kTargets[in.ConsumeIntegralInRange<size_t>(0, std::size(kTargets) - 1)];
  // Short strings over the characters that matter to a path, NUL included.
  std::string raw = in.ConsumeRandomLengthString(8);
  for (char& c : raw) c = "a./\0"[static_cast<unsigned char>(c) % 4];
  return raw;
}

// The tree as the messages describe it, expanded without sharing.
struct Expanded {
  int64_t files = 0, directories = 0, bytes = 0, depth = 0;
  bool over_budget = false;
};

void Expand(const absl::flat_hash_map<Digest, Directory>& dirs, const Directory& d, int64_t depth, Expanded* out) {
  if (out->files + out->directories > 100000) {
    out->over_budget = true;  // far past any limit used here
    return;
  }
  out->depth = std::max(out->depth, depth);
  out->files += d.files_size() + d.symlinks_size();
  for (const auto& f : d.files()) out->bytes += f.digest().size_bytes();
  for (const auto& child : d.directories()) {
    ++out->directories;
    Expand(dirs, dirs.at(*kiln::ParseDigest(child.digest())), depth + 1, out);
  }
}

// Compares what was staged under `fd` with `d`: entries, types, sizes,
// symlink texts. Never follows a symlink.
bool Matches(const absl::flat_hash_map<Digest, Directory>& dirs, const Directory& d, int fd) {
  size_t expected = d.files_size() + d.directories_size() + d.symlinks_size();
  for (const auto& f : d.files()) {
    struct stat st;
    if (fstatat(fd, f.name().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
        st.st_size != f.digest().size_bytes() || ((st.st_mode & 0111) != 0) != f.is_executable() ||
        (st.st_mode & 0222) != 0) {
      return false;
    }
  }
  for (const auto& l : d.symlinks()) {
    char buf[256];
    ssize_t n = readlinkat(fd, l.name().c_str(), buf, sizeof(buf));
    if (n < 0 || std::string(buf, n) != l.target()) return false;
  }
  for (const auto& c : d.directories()) {
    int sub = openat(fd, c.name().c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) return false;
    bool ok = Matches(dirs, dirs.at(*kiln::ParseDigest(c.digest())), sub);
    close(sub);
    if (!ok) return false;
  }
  // Nothing else is there.
  int copy = dup(fd);
  DIR* listing = fdopendir(copy);
  size_t found = 0;
  while (dirent* e = readdir(listing)) {
    if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") ++found;
  }
  closedir(listing);
  return found == expected;
}

}  // namespace

// Protobuf logs every string field that is not UTF-8; fuzzing makes many.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& world = *TheWorld();
  FuzzedDataProvider in(data, size);
  const bool canonical = in.ConsumeBool();  // sorted, unique names: usually gets past validation
  absl::flat_hash_map<Digest, Directory> dirs;
  std::vector<Digest> order;
  const int count = in.ConsumeIntegralInRange(1, 24);
  for (int k = 0; k < count; ++k) {
    Directory d;
    const int entries = in.ConsumeIntegralInRange(0, 6);
    for (int e = 0; e < entries; ++e) {
      switch (in.ConsumeIntegralInRange(0, 2)) {
        case 0: {
          auto* f = d.add_files();
          f->set_name(Name(in));
          Digest digest = in.ConsumeIntegralInRange(0, 15) == 0
                              ? Digest::Of(absl::StrCat("missing ", in.ConsumeIntegral<uint8_t>()))
                              : world.files[in.ConsumeIntegralInRange<size_t>(0, world.files.size() - 1)];
          *f->mutable_digest() = digest.ToProto();
          f->set_is_executable(in.ConsumeBool());
          break;
        }
        case 1: {
          if (order.empty()) break;
          auto* c = d.add_directories();
          c->set_name(Name(in));
          *c->mutable_digest() = order[in.ConsumeIntegralInRange<size_t>(0, order.size() - 1)].ToProto();
          break;
        }
        default: {
          auto* l = d.add_symlinks();
          l->set_name(Name(in));
          l->set_target(Target(in));
        }
      }
    }
    if (canonical) {
      auto by_name = [](const auto& a, const auto& b) { return a.name() < b.name(); };
      std::sort(d.mutable_files()->begin(), d.mutable_files()->end(), by_name);
      std::sort(d.mutable_directories()->begin(), d.mutable_directories()->end(), by_name);
      std::sort(d.mutable_symlinks()->begin(), d.mutable_symlinks()->end(), by_name);
    }
    std::string blob = d.SerializeAsString();
    Digest digest = Digest::Of(blob);
    if (!world.cas->Put(digest, blob).ok()) abort();
    dirs[digest] = d;
    order.push_back(digest);
  }
  kiln::exec::StageOptions options;
  options.copy_files = in.ConsumeBool();
  options.limits.max_files = in.ConsumeIntegralInRange(0, 64);
  options.limits.max_directories = in.ConsumeIntegralInRange(0, 64);
  options.limits.max_bytes = in.ConsumeIntegralInRange(0, 256);
  options.limits.max_depth = in.ConsumeIntegralInRange(0, 10);

  const std::string dest = world.root + "/stage";
  if (mkdir(dest.c_str(), 0755) != 0) abort();
  int dest_fd = open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const Directory& root = dirs[order.back()];
  absl::Status status = world.stager->Stage(order.back(), dest_fd, options);

  if (status.ok() || absl::IsResourceExhausted(status)) {
    // Both mean every message was valid and present: the oracle can expand.
    Expanded size;
    Expand(dirs, root, 0, &size);
    const auto& limits = options.limits;
    bool over = size.over_budget || size.files > limits.max_files ||
                size.directories > limits.max_directories || size.bytes > limits.max_bytes ||
                size.depth > limits.max_depth;
    bool matches = status.ok() && Matches(dirs, root, dest_fd);
    if ((status.ok() && over) || (!status.ok() && !over) || (status.ok() && !matches)) {
      fprintf(stderr, "staging: %s\nexpanded: %lld files, %lld directories, %lld bytes, depth %lld%s\n"
              "limits: %lld files, %lld directories, %lld bytes, depth %d\nstaged as described: %d\n",
              status.ToString().c_str(), (long long)size.files, (long long)size.directories,
              (long long)size.bytes, (long long)size.depth, size.over_budget ? " (and more)" : "",
              (long long)limits.max_files, (long long)limits.max_directories, (long long)limits.max_bytes,
              limits.max_depth, matches);
      __builtin_trap();
    }
  } else if (!absl::IsInvalidArgument(status) && !absl::IsFailedPrecondition(status)) {
    fprintf(stderr, "staging: %s\n", status.ToString().c_str());
    __builtin_trap();
  }
  close(dest_fd);
  if (!kiln::RemoveTree(dest).ok()) abort();
  return 0;
}
