// Control case: a user type that works with cereal crosses unchanged, inside
// standard containers too.
#include <mp/serialize.hpp>

#include <map>
#include <string>
#include <vector>

struct point {
    int x = 0;
    int y = 0;
    std::string label;

    template <class Archive>
    void serialize(Archive& ar) {
        ar(x, y, label);
    }
};

static_assert(mp::transferable<point>);
static_assert(mp::transferable<std::map<std::string, std::vector<point>>>);

void send(mp::detail::output_archive& ar, const point& p) { mp::detail::save_value(ar, p); }
point receive(mp::detail::input_archive& ar) { return mp::detail::load_value<point>(ar); }
