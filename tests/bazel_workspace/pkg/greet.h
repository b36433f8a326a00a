#ifndef PKG_GREET_H_
#define PKG_GREET_H_
#include <string>
std::string Greeting(const std::string& name);
#endif
