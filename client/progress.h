// A one-line progress bar on stderr, drawn only when stderr is a terminal:
// scripts and CI logs get no control characters.
#ifndef KILN_CLIENT_PROGRESS_H_
#define KILN_CLIENT_PROGRESS_H_

#include <cstdint>
#include <string>

namespace kiln::client {

class Progress {
 public:
  Progress(std::string what, int64_t total_bytes);
  ~Progress();  // clears the line
  void Add(int64_t bytes);

 private:
  void Draw();
  const std::string what_;
  const int64_t total_;
  int64_t done_ = 0;
  const bool enabled_;
  int last_percent_ = -1;
};

}  // namespace kiln::client

#endif  // KILN_CLIENT_PROGRESS_H_
