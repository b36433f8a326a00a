#include <cstdio>
#include "pkg/greet.h"
int main() { std::printf("%s\n", Greeting("kiln").c_str()); return 0; }
