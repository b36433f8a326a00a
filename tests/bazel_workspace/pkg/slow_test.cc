#include <unistd.h>
int main() { sleep(120); return 0; }
