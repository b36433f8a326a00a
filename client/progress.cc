#include "client/progress.h"

#include <unistd.h>

#include <cstdio>

namespace kiln::client {

Progress::Progress(std::string what, int64_t total_bytes)
    : what_(std::move(what)), total_(total_bytes), enabled_(isatty(2) && total_bytes > 0) {}

Progress::~Progress() {
  if (enabled_ && last_percent_ >= 0) std::fprintf(stderr, "\r\033[K");
}

void Progress::Add(int64_t bytes) {
  done_ += bytes;
  if (enabled_) Draw();
}

void Progress::Draw() {
  int percent = static_cast<int>(total_ == 0 ? 100 : done_ * 100 / total_);
  if (percent == last_percent_) return;
  last_percent_ = percent;
  constexpr int kWidth = 30;
  std::string bar(percent * kWidth / 100, '#');
  bar.resize(kWidth, ' ');
  std::fprintf(stderr, "\r\033[K%s [%s] %3d%% %.1f/%.1f MiB", what_.c_str(), bar.c_str(), percent,
               done_ / 1048576.0, total_ / 1048576.0);
  std::fflush(stderr);
}

}  // namespace kiln::client
