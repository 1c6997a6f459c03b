// A std::mutex cannot be sent to another process: the message says to use mp::lock.
#include <mp/serialize.hpp>

#include <mutex>

void send(mp::detail::output_archive& ar, const std::mutex& m) { mp::detail::save_value(ar, m); }
