// fuzz_manager_request — the manager server's request dispatcher, over a
// real authenticated connection to a server running in this process.
//
// Entry point: base_manager::get_server().serve_forever() (on a thread) is
// the server; the target connects with mgr::channel, passes
// mgr::authenticate_to_server and sends each fuzzed request as one frame
// (protocol in src/manager/protocol.hpp). The server must answer every
// request with a reply frame [u8 status][result | exception_record], or
// close the connection after a bad frame; it must never crash, and a
// correct client must still be served afterwards (checked after every input).
//
// Input: frames [u16 length][body], one request each. To reach objects, the
// u64 object id of call/incref/decref is read as an index into the objects
// this input created. A shutdown request is not sent (it would stop the
// server every other input); a request that blocks (a lock acquired twice,
// get on an empty queue) gets 20 ms, then the connection is dropped, as a
// client that gives up would. Objects this input created are released after
// it, so no state carries over to the next input but the connection, which
// is kept while it works (a handshake per input would cost most of the time).
#include <cstring>

#include "fuzz_support.hpp"
#include "manager_support.hpp"

namespace {

namespace mgr = mp::detail::mgr;
using mp_fuzz::counter;

constexpr auto reply_wait = std::chrono::milliseconds(20);
// How long a request that must not block (a decref, a ping) may take on a
// loaded machine before it counts as a hang.
constexpr auto liveness_wait = std::chrono::seconds(30);
constexpr std::size_t max_reply = std::size_t{64} << 20;

struct reply {
    bool arrived = false;
    std::vector<std::byte> body;
};

reply round_trip(mgr::channel& ch, std::span<const std::byte> request,
                 mgr::clock::duration wait = reply_wait) {
    mp_fuzz::send_request(ch, request);
    auto body = ch.receive(max_reply, mgr::clock::now() + wait, mgr::clock::duration::zero());
    return {true, {body.begin(), body.end()}};
}

std::uint8_t status_of(const reply& r) {
    if (r.body.empty()) mp_fuzz::fail("the server sent an empty reply");
    auto s = static_cast<std::uint8_t>(r.body[0]);
    if (s > 1) mp_fuzz::fail("the server sent a reply with an unknown status");
    if (s == 1) {  // an error reply carries an exception record
        mp::detail::input_archive in(std::span(r.body).subspan(1));
        if (!mp_fuzz::decoded([&] { (void)mp::detail::load_value<mp::detail::exception_record>(in); }))
            mp_fuzz::fail("the server's error reply does not hold an exception record");
    }
    return s;
}

// The connection inputs are sent on; remade after the server closed it or a
// request blocked.
std::unique_ptr<mgr::channel> the_connection;

std::unique_ptr<mgr::channel>& connection() {
    if (!the_connection) the_connection = mp_fuzz::connect_authenticated();
    return the_connection;
}

void release(const std::vector<std::uint64_t>& ids) {
    if (ids.empty()) return;
    auto& ch = connection();
    for (auto id : ids) {
        for (int i = 0; i < 300; ++i) {  // every incref of the input, then once more
            auto req = mp_fuzz::encode(std::make_tuple(static_cast<std::uint8_t>(mgr::op::decref), id));
            if (status_of(round_trip(*ch, req, liveness_wait)) != 0) break;
        }
    }
}

// A correct client is still served: the server is alive and answers, on a
// loaded machine too (a hang shows as the fuzzer's timeout).
void check_server_serves() {
    auto& ch = connection();
    auto r = round_trip(*ch, mp_fuzz::encode(static_cast<std::uint8_t>(mgr::op::ping)), liveness_wait);
    if (status_of(r) != 0) mp_fuzz::fail("the server refused a ping after the input");
}

}  // namespace

namespace mp_fuzz {

void set_up() {
    (void)mp_fuzz::the_server();
    // Connect first: the handshake initialises OpenSSL, which registers its
    // own clean-up at exit; ours, registered after, runs before it.
    (void)connection();
    std::atexit([] {
        the_connection.reset();
        mp_fuzz::the_server().stop();
    });
}

}  // namespace mp_fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<std::uint64_t> created;
    {
        auto& ch = connection();
        std::size_t at = 0;
        while (at + 2 <= size) {
            std::size_t n = std::min<std::size_t>(data[at] | (data[at + 1] << 8), size - at - 2);
            std::vector<std::byte> body(reinterpret_cast<const std::byte*>(data + at + 2),
                                        reinterpret_cast<const std::byte*>(data + at + 2 + n));
            at += 2 + n;
            auto code = body.empty() ? 0 : static_cast<std::uint8_t>(body[0]);
            if (code == static_cast<std::uint8_t>(mgr::op::shutdown)) continue;
            bool names_object = code == static_cast<std::uint8_t>(mgr::op::call) ||
                                code == static_cast<std::uint8_t>(mgr::op::incref) ||
                                code == static_cast<std::uint8_t>(mgr::op::decref);
            if (names_object && body.size() >= 9 && !created.empty()) {
                std::uint64_t index;
                std::memcpy(&index, body.data() + 1, 8);
                std::memcpy(body.data() + 1, &created[index % created.size()], 8);
            }
            reply r;
            try {
                r = round_trip(*ch, body);
            } catch (const mp::timeout_error&) {
                ch.reset();  // a blocking call: give up on this connection
                break;
            } catch (const mp::eof_error&) {
                ch.reset();  // the server closed it (a bad frame)
                break;
            }
            if (status_of(r) == 0 && code == static_cast<std::uint8_t>(mgr::op::create)) {
                if (r.body.size() < 9) mp_fuzz::fail("a create reply without an object id");
                std::uint64_t id;
                std::memcpy(&id, r.body.data() + 1, 8);
                created.push_back(id);
            }
        }
    }
    release(created);
    check_server_serves();
    return 0;
}

namespace mp_fuzz {

// Requests as a client writes them: [u16 length][body] each.
class script {
public:
    template <class... T>
    script& request(const T&... fields) {
        mp::detail::output_archive ar;
        (mp::detail::save_value(ar, fields), ...);
        auto body = mp_fuzz::flatten(ar);
        bytes_.push_back(static_cast<std::byte>(body.size() & 0xff));
        bytes_.push_back(static_cast<std::byte>(body.size() >> 8));
        bytes_.insert(bytes_.end(), body.begin(), body.end());
        return *this;
    }
    const std::vector<std::byte>& bytes() const { return bytes_; }

private:
    std::vector<std::byte> bytes_;
};

template <auto M>
mgr::method_info method(std::string_view name) {
    return mgr::describe<M, mgr::member_traits<decltype(M)>>(name);
}
template <auto F>
mgr::method_info function(std::string_view name) {
    return mgr::describe<F, mgr::function_traits<decltype(F)>>(name);
}

void write_seeds() {
    using mp::detail::type_tag;
    const auto call = static_cast<std::uint8_t>(mgr::op::call);
    const auto create = static_cast<std::uint8_t>(mgr::op::create);
    const std::uint64_t none = type_tag<std::tuple<>>();
    const std::uint64_t first = 0;  // the first object this input created

    auto add = method<&counter::add>("add");
    auto value = method<&counter::value>("value");
    auto note = method<&counter::note>("note");
    auto table = method<&counter::table>("table");
    mp_fuzz::write_seed(
        "counter", script()
                       .request(create, std::string("counter"), type_tag<mp::proxy<counter>>(), none)
                       .request(call, first, std::string("add"), add.args_tag, add.result_tag, std::make_tuple(std::int64_t{5}))
                       .request(call, first, std::string("value"), value.args_tag, value.result_tag, std::tuple<>())
                       .request(call, first, std::string("note"), note.args_tag, note.result_tag, std::make_tuple(std::string("ab"), 2))
                       .request(call, first, std::string("table"), table.args_tag, table.result_tag,
                                std::make_tuple(std::vector<std::pair<std::string, double>>{{"a", 1}, {"a", 2}}))
                       .request(call, first, std::string("_hidden"), none, std::uint64_t{0}, std::tuple<>())
                       .request(static_cast<std::uint8_t>(mgr::op::incref), first)
                       .request(static_cast<std::uint8_t>(mgr::op::decref), first)
                       .bytes());
    auto twice = function<&mp_fuzz::twice>("twice");
    auto greet = function<&mp_fuzz::greet>("greet");
    mp_fuzz::write_seed(
        "module", script()
                      .request(create, std::string("functions"), type_tag<mp::module_proxy>(), none)
                      .request(call, first, std::string("twice"), twice.args_tag, twice.result_tag, std::make_tuple(21))
                      .request(call, first, std::string("greet"), greet.args_tag, greet.result_tag, std::make_tuple(std::string("you")))
                      .bytes());
    mp_fuzz::write_seed(
        "generator", script()
                         .request(create, std::string("count_to"), type_tag<mp::generator_proxy<int>>(),
                                  type_tag<std::tuple<int>>(), std::make_tuple(5))
                         .request(call, first, std::string("next"), type_tag<std::tuple<std::uint32_t>>(),
                                  mgr::generator_tag<int>(), std::make_tuple(std::uint32_t{3}))
                         .bytes());
    // The shared types: created with (element tag, initial value, maxsize);
    // every call carries the element tag as its args_tag.
    const std::uint64_t element = type_tag<std::string>();
    auto shared = [&](const char* type) {
        return std::make_tuple(create, std::string(type), std::uint64_t{0}, std::uint64_t{0},
                               std::make_tuple(element, std::string("init"), std::uint64_t{2}));
    };
    auto with = [](auto&& s, auto&& t) {
        std::apply([&](auto&... f) { s.request(f...); }, t);
        return std::move(s);
    };
    mp_fuzz::write_seed(
        "dict", with(script(), shared("mp.dict"))
                    .request(call, first, std::string("set"), element, std::uint64_t{0}, std::make_tuple(std::string("k"), std::string("v")))
                    .request(call, first, std::string("get"), element, std::uint64_t{0}, std::make_tuple(std::string("k")))
                    .request(call, first, std::string("items"), element, std::uint64_t{0}, std::tuple<>())
                    .request(call, first, std::string("update"), element, std::uint64_t{0},
                             std::make_tuple(std::vector<std::pair<std::string, std::string>>{{"a", "b"}}))
                    .bytes());
    mp_fuzz::write_seed(
        "list", with(script(), shared("mp.list"))
                    .request(call, first, std::string("append"), element, std::uint64_t{0}, std::make_tuple(std::string("x")))
                    .request(call, first, std::string("pop"), element, std::uint64_t{0}, std::make_tuple(std::int64_t{-1}))
                    .bytes());
    mp_fuzz::write_seed(
        "queue", with(script(), shared("mp.queue"))
                     .request(call, first, std::string("put"), element, std::uint64_t{0}, std::make_tuple(std::string("x"), std::int64_t{0}))
                     .request(call, first, std::string("get"), element, std::uint64_t{0}, std::make_tuple(std::int64_t{0}))
                     .bytes());
    mp_fuzz::write_seed(
        "lock-event", with(with(script(), shared("mp.lock")), shared("mp.event"))
                          .request(call, first, std::string("acquire"), element, std::uint64_t{0}, std::make_tuple(std::int64_t{0}))
                          .request(call, first, std::string("release"), element, std::uint64_t{0}, std::tuple<>())
                          .request(call, std::uint64_t{1}, std::string("wait"), element, std::uint64_t{0}, std::make_tuple(std::int64_t{0}))
                          .bytes());
    mp_fuzz::write_seed("value", with(script(), shared("mp.value"))
                                     .request(call, first, std::string("get"), element, std::uint64_t{0}, std::tuple<>())
                                     .request(static_cast<std::uint8_t>(mgr::op::ping))
                                     .bytes());
}

}  // namespace mp_fuzz
