// fuzz_manager_request — the manager server's request dispatcher, through
// its test hook.
//
// Entry point: mgr::serve_request_for_test (src/manager/server.hpp) on the
// server of a base_manager (get_server(), never served): each fuzzed request
// goes through mgr::reply_to and manager_server::impl::handle, the path a
// request takes in the server once its frame has been read, against the
// server's object table, with no socket round trip (the frame reader is the
// manager_handshake and pipe_frame targets' concern). Every request must be
// answered with [u8 status][result | exception_record]; nothing may crash,
// leak or hang, and the server must still answer a correct request after
// every input.
//
// Input: frames [u16 length][body], one request each (protocol in
// src/manager/protocol.hpp). To reach objects, the u64 object id of
// call/incref/decref is read as an index into the objects this input
// created. Calls are served for a client that is still there (its socket's
// peer is open) and never wait (wait_context::never_wait): a get on an empty
// queue is empty, an acquire of a held lock fails, an event's wait times
// out, at once, as for a client that asked not to block; every request is
// answered and the input goes on. A shutdown request (which stops nothing
// here) ends the input, as the server would stop after it. Objects this
// input created are released after it, so no state carries over to the
// next input.
#include <cstring>
#include <optional>
#include <utility>

#include "fuzz_support.hpp"
#include "manager/server.hpp"
#include "manager_support.hpp"

namespace {

namespace mgr = mp::detail::mgr;
using mp_fuzz::counter;

std::uint8_t status_of(const std::vector<std::byte>& body) {
    if (body.empty()) mp_fuzz::fail("the server sent an empty reply");
    auto s = static_cast<std::uint8_t>(body[0]);
    if (s > 1) mp_fuzz::fail("the server sent a reply with an unknown status");
    if (s == 1) {  // an error reply carries an exception record
        mp::detail::input_archive in(std::span(body).subspan(1));
        if (!mp_fuzz::decoded([&] { (void)mp::detail::load_value<mp::detail::exception_record>(in); }))
            mp_fuzz::fail("the server's error reply does not hold an exception record");
    }
    return s;
}

/// The server whose dispatcher is fuzzed, and the socket a taking call
/// checks its client on: both ends open, as a client waiting for its reply.
struct dispatcher {
    mp::base_manager manager{mp::manager_options{.authkey = mp_fuzz::authkey}};
    mp::manager_server server = (mp_fuzz::register_fuzz_types(manager), manager.get_server());
    std::pair<mp::detail::unique_fd, mp::detail::unique_fd> client = mp::sys::socket_pair();
    std::atomic<bool> stopping{false};

    [[nodiscard]] mgr::wait_context context() const {
        return {.fd = client.first.get(), .stopping = &stopping, .never_wait = true};
    }

    /// Every request must be answered: its client is there and no call waits.
    mgr::test_reply serve(std::span<const std::byte> request) {
        auto r = mgr::serve_request_for_test(server, request, context());
        if (!r.body) mp_fuzz::fail("a request of a client that is still there got no reply");
        return r;
    }
    std::vector<std::byte> answer(std::span<const std::byte> request) { return std::move(*serve(request).body); }
};

dispatcher* the_dispatcher = nullptr;

// Objects this input created, with the references it holds on each: the
// create's one, plus every incref answered ok, less every decref answered ok.
using held_objects = std::vector<std::pair<std::uint64_t, std::int64_t>>;

void count_reference(held_objects& held, std::uint64_t id, std::int64_t delta) {
    for (auto& [object, refs] : held)
        if (object == id) refs += delta;
}

/// Drops the references the input still holds: each object must then be
/// gone (a call on it refused), so the next input starts from an empty table.
void release(const held_objects& held) {
    for (auto [id, refs] : held) {
        for (; refs > 0; --refs) {
            auto req = mp_fuzz::encode(std::make_tuple(static_cast<std::uint8_t>(mgr::op::decref), id));
            if (status_of(the_dispatcher->answer(req)) != 0) mp_fuzz::fail("a decref of a held reference was refused");
        }
        auto req = mp_fuzz::encode(std::make_tuple(static_cast<std::uint8_t>(mgr::op::decref), id));
        if (status_of(the_dispatcher->answer(req)) == 0) mp_fuzz::fail("an object outlived every reference to it");
    }
}

}  // namespace

namespace mp_fuzz {

void set_up() {
    the_dispatcher = new dispatcher;
    // At exit the manager removes its socket directory.
    std::atexit([] { delete the_dispatcher; });
}

}  // namespace mp_fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    held_objects held;
    std::size_t at = 0;
    while (at + 2 <= size) {
        std::size_t n = std::min<std::size_t>(data[at] | (data[at + 1] << 8), size - at - 2);
        std::vector<std::byte> body(reinterpret_cast<const std::byte*>(data + at + 2),
                                    reinterpret_cast<const std::byte*>(data + at + 2 + n));
        at += 2 + n;
        auto code = body.empty() ? 0 : static_cast<std::uint8_t>(body[0]);
        bool names_object = code == static_cast<std::uint8_t>(mgr::op::call) ||
                            code == static_cast<std::uint8_t>(mgr::op::incref) ||
                            code == static_cast<std::uint8_t>(mgr::op::decref);
        std::optional<std::uint64_t> named;
        if (names_object && body.size() >= 9) {
            std::uint64_t index;
            std::memcpy(&index, body.data() + 1, 8);
            if (!held.empty()) std::memcpy(body.data() + 1, &held[index % held.size()].first, 8);
            std::memcpy(&index, body.data() + 1, 8);
            named = index;
        }
        auto r = the_dispatcher->serve(body);
        bool ok = status_of(*r.body) == 0;
        if (ok && code == static_cast<std::uint8_t>(mgr::op::create)) {
            if (r.body->size() < 9) mp_fuzz::fail("a create reply without an object id");
            std::uint64_t id;
            std::memcpy(&id, r.body->data() + 1, 8);
            held.emplace_back(id, 1);
        }
        if (ok && named && code == static_cast<std::uint8_t>(mgr::op::incref)) count_reference(held, *named, +1);
        if (ok && named && code == static_cast<std::uint8_t>(mgr::op::decref)) count_reference(held, *named, -1);
        if (r.stop_requested) break;  // the server would stop after this reply
    }
    release(held);
    // A correct client is still served.
    if (status_of(the_dispatcher->answer(mp_fuzz::encode(static_cast<std::uint8_t>(mgr::op::ping)))) != 0)
        mp_fuzz::fail("the server refused a ping after the input");
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
