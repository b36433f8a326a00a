#include <cstdio>

int main() {
  long sum = 0;
  for (int i = 1; i <= 7; ++i) sum += i * i;
  if (sum != 140) {
    std::printf("wrong sum %ld\n", sum);
    return 1;
  }
  std::printf("ok\n");
  return 0;
}
