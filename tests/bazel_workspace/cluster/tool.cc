#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  int n = argc > 1 ? std::atoi(argv[1]) : 1;
  long sum = 0;
  for (int i = 1; i <= n; ++i) sum += i * i;
  std::printf("sum of squares to %d: %ld\n", n, sum);
  return 0;
}
