#include "pkg/greet.h"
std::string Greeting(const std::string& name) { return "Hello, " + name + "!"; }
