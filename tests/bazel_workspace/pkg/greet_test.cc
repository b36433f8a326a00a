#include <cstdio>
#include "pkg/greet.h"
int main() {
  if (Greeting("x") != "Hello, x!") { std::printf("unexpected greeting\n"); return 1; }
  std::printf("greet_test passed\n");
  return 0;
}
