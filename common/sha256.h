// Incremental SHA-256 (OpenSSL EVP), the only digest function Kiln serves.
#ifndef KILN_COMMON_SHA256_H_
#define KILN_COMMON_SHA256_H_

#include <string>
#include "absl/strings/string_view.h"

struct evp_md_ctx_st;

namespace kiln {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(absl::string_view data);
  // Returns the lowercase hex digest. The object must not be used afterwards.
  std::string FinishHex();

  static std::string HexOf(absl::string_view data);

 private:
  evp_md_ctx_st* ctx_;
};

}  // namespace kiln

#endif  // KILN_COMMON_SHA256_H_
