// A raw pointer means nothing in another process.
#include <mp/serialize.hpp>

void send(mp::detail::output_archive& ar, const int* p) { mp::detail::save_value(ar, p); }
