// A user type without a cereal serialize member cannot cross.
#include <mp/serialize.hpp>

struct point_without_serialize {
    int x = 0;
    int y = 0;
};

void send(mp::detail::output_archive& ar, const point_without_serialize& p) { mp::detail::save_value(ar, p); }
