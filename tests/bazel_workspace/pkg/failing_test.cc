#include <cstdio>
int main() { std::printf("KILN-EXPECTED-FAILURE: this test fails on purpose\n"); return 1; }
