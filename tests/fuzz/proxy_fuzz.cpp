// fuzz_proxy — proxies received from another process (load_ref in
// src/manager/client.cpp, via each proxy type's load) and the values the
// shared types hold for other clients (mgr::from_bytes).
//
// A manager server runs in this process with one object of each kind
// (made with raw create requests at start-up, ids 1..9 in `objects`). A
// proxy's message is [address][authkey][u64 id][type][exposed][kind tag];
// the address and key are this server's (the archive target fuzzes address
// decoding; a fuzzed address would make every input dial the network), the
// rest is the fuzz bytes. A proxy that decodes is used once (it talks to the
// server) and destroyed (which releases its reference).
//
// Input: [u8 selector][bytes]. selector % 10 < 9: a proxy of that kind;
// selector 250: received with no other proxy of the server held, so that
// its client connects and authenticates first (else the proxy held for the
// whole run keeps the connection open, as in a program that uses a manager);
// 9: the bytes are stored as the shared value's contents (a raw "set", as a
// client of another program could) and read back through value_proxy::get,
// which decodes them. Decoding must give a proxy or a value, or throw an
// mp:: error; calls may throw what the server's object threw.
#include <cctype>
#include <cstdio>
#include <cstring>
#include <optional>

#include "fuzz_support.hpp"
#include "manager_support.hpp"

namespace {

namespace mgr = mp::detail::mgr;
using mp_fuzz::counter;
using stored = std::vector<std::pair<std::string, std::int64_t>>;  // the shared value's type

struct object {
    const char* type;
    std::uint64_t proxy_tag;
    std::uint64_t element_tag;  // shared types only
    std::uint64_t args_tag;     // registered entries only
};

// Kinds in selector order; each made once at start-up.
const std::vector<object>& objects() {
    using mp::detail::type_tag;
    static const std::vector<object> all = {
        {"counter", type_tag<mp::proxy<counter>>(), 0, type_tag<std::tuple<>>()},
        {"functions", type_tag<mp::module_proxy>(), 0, type_tag<std::tuple<>>()},
        {"count_to", type_tag<mp::generator_proxy<int>>(), 0, type_tag<std::tuple<int>>()},
        {"mp.dict", type_tag<mp::dict_proxy<std::string, int>>(), type_tag<std::pair<std::string, int>>(), 0},
        {"mp.list", type_tag<mp::list_proxy<std::string>>(), type_tag<std::string>(), 0},
        {"mp.value", type_tag<mp::value_proxy<stored>>(), type_tag<stored>(), 0},
        {"mp.queue", type_tag<mp::queue_proxy<double>>(), type_tag<double>(), 0},
        {"mp.lock", type_tag<mp::lock_proxy>(), 0, 0},
        {"mp.event", type_tag<mp::event_proxy>(), 0, 0},
    };
    return all;
}

std::vector<std::uint64_t> ids;  // of objects(), in order

// This target's own connections (not the proxies under test) retry a
// handshake the server cut short: its deadline is 500 ms
// (manager_support.hpp), which a nice-19 fuzzer on a loaded 2-core machine
// can miss; the server then closes the connection and the client reports an
// authentication_error or eof_error. A real failure fails every attempt.
template <class F>
auto with_handshake_retries(F&& connect) {
    for (int attempt = 1;; ++attempt) {
        try {
            return connect();
        } catch (const mp::error&) {
            if (attempt == 5) throw;
        }
    }
}
std::unique_ptr<mgr::channel> raw;  // for the raw "set" of the shared value
std::optional<mp::proxy<counter>> held;  // for the whole run: see set_up

std::vector<std::byte> request(const mp::detail::output_archive& body) {
    mp_fuzz::send_request(*raw, mp_fuzz::flatten(body));
    auto reply = raw->receive(std::size_t{64} << 20, mgr::clock::now() + std::chrono::seconds(30),
                              mgr::clock::duration::zero());
    if (reply.empty() || reply[0] != std::byte{0}) {
        for (auto b : reply) std::fputc(std::isprint(static_cast<int>(b)) ? static_cast<int>(b) : 46, stderr);
        std::fputc(10, stderr);
        mp_fuzz::fail("the server refused a set-up request");
    }
    return {reply.begin() + 1, reply.end()};
}

void make_objects() {
    raw = with_handshake_retries([] { return mp_fuzz::connect_authenticated(); });
    for (auto& o : objects()) {
        mp::detail::output_archive ar;
        ar(static_cast<std::uint8_t>(mgr::op::create), std::string(o.type), o.proxy_tag);
        // Built-ins are made with their own arguments (builtin_types.cpp):
        // a value's initial bytes, a queue's maxsize, nothing for the rest.
        if (std::string_view(o.type) == "mp.value") {
            ar(mp::detail::type_tag<std::tuple<std::string>>(), std::make_tuple(std::string()));
        } else if (std::string_view(o.type) == "mp.queue") {
            ar(mp::detail::type_tag<std::tuple<std::uint64_t>>(), std::make_tuple(std::uint64_t{0}));
        } else if (std::string_view(o.type).starts_with("mp.")) {
            ar(mp::detail::type_tag<std::tuple<>>(), std::tuple<>());
        } else {
            ar(o.args_tag);
            if (std::string_view(o.type) == "count_to") ar(std::make_tuple(5));
        }
        auto reply = request(ar);
        std::uint64_t id;
        std::memcpy(&id, reply.data(), 8);
        ids.push_back(id);
    }
}

// A proxy's message, with this server's address before `rest`.
std::vector<std::byte> with_prefix(std::span<const std::byte> rest) {
    mp::detail::output_archive ar;
    mp::address addr = mp::unix_address{mp_fuzz::the_server().path};
    ar(addr);  // a proxy carries no key: the receiver knows the server's (mgr::load_ref)
    auto bytes = mp_fuzz::flatten(ar);
    bytes.insert(bytes.end(), rest.begin(), rest.end());
    return bytes;
}

// A program that uses a manager holds a proxy of it (or the manager itself)
// while it receives others: the proxies it receives share that one client
// and its open connections. With none held, each input's proxy made the
// client anew, connecting and authenticating (4 times the cost of the rest
// of an input); a few selectors still receive their proxy so (`fresh`).
void hold_a_proxy() {
    mp::detail::output_archive msg;
    msg(ids[0], std::string(objects()[0].type), std::vector<std::string>{"value"}, objects()[0].proxy_tag);
    auto bytes = with_prefix(mp_fuzz::flatten(msg));
    with_handshake_retries([&] {
        mp::detail::input_archive in(bytes);
        held.emplace(mp::detail::load_value<mp::proxy<counter>>(in));
    });
}

template <class P, class Use>
void receive_proxy(std::span<const std::byte> rest, Use use) {
    auto bytes = with_prefix(rest);
    std::optional<P> p;
    try {
        mp::detail::input_archive in(bytes);
        p.emplace(mp::detail::load_value<P>(in));
    } catch (const mp::error&) {
        return;  // corrupt, another kind, or an id the server does not know
    }
    try {
        use(*p);
    } catch (const std::exception&) {
        // What the object threw, or refused (not exposed, wrong types).
    }
}

void receive(std::size_t kind, std::span<const std::byte> rest) {
    switch (kind) {
        case 0: receive_proxy<mp::proxy<counter>>(rest, [](auto& p) { (void)p.template call<&counter::value>(); }); break;
        case 1: receive_proxy<mp::module_proxy>(rest, [](auto& p) { (void)p.template call<int>("twice", 4); }); break;
        case 2:
            receive_proxy<mp::generator_proxy<int>>(rest, [](auto& p) {
                int n = 0;
                for (int x : p) {
                    (void)x;
                    if (++n == 3) break;
                }
            });
            break;
        case 3: receive_proxy<mp::dict_proxy<std::string, int>>(rest, [](auto& p) { (void)p.size(); }); break;
        case 4: receive_proxy<mp::list_proxy<std::string>>(rest, [](auto& p) { (void)p.size(); }); break;
        case 5: receive_proxy<mp::value_proxy<stored>>(rest, [](auto& p) { (void)p.get(); }); break;
        case 6: receive_proxy<mp::queue_proxy<double>>(rest, [](auto& p) { (void)p.size(); }); break;
        case 7: receive_proxy<mp::lock_proxy>(rest, [](auto& p) { (void)p.locked(); }); break;
        case 8: receive_proxy<mp::event_proxy>(rest, [](auto& p) { (void)p.is_set(); }); break;
    }
}

// Another client stored `bytes` as the shared value; this one reads it.
void read_stored(std::span<const std::byte> bytes) {
    mp::detail::output_archive ar;
    ar(static_cast<std::uint8_t>(mgr::op::call), ids[5], std::string("set"),
       mp::detail::type_tag<std::tuple<std::string>>(), std::uint64_t{0}, std::make_tuple(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size())));
    request(ar);
    mp::detail::output_archive msg;
    msg(ids[5], std::string("mp.value"), std::vector<std::string>{"get", "set"}, objects()[5].proxy_tag);
    auto proxy_bytes = with_prefix(mp_fuzz::flatten(msg));
    mp::detail::input_archive in(proxy_bytes);
    auto p = mp::detail::load_value<mp::value_proxy<stored>>(in);
    mp_fuzz::decoded([&] { (void)p.get(); });
}

}  // namespace

namespace mp_fuzz {

void set_up() {
    (void)mp_fuzz::the_server();
    make_objects();  // the first handshake: OpenSSL's clean-up at exit is registered before ours
    hold_a_proxy();
    std::atexit([] {
        held.reset();
        raw.reset();
        mp_fuzz::the_server().stop();
    });
}

}  // namespace mp_fuzz

// The selector that receives its proxy in a process that holds no proxy of
// the server, as a program's first one: it connects and authenticates (one
// selector of 256: that costs 4 times the rest of an input, and is the
// manager_handshake target's subject).
constexpr std::uint8_t fresh_selector = 250;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    auto rest = mp_fuzz::as_bytes(data + 1, size - 1);
    std::size_t kind = data[0] % (objects().size() + 1);
    const bool fresh = data[0] == fresh_selector;
    if (fresh) held.reset();  // the client goes with its last proxy
    if (kind == objects().size())
        read_stored(rest);
    else
        receive(kind, rest);
    if (fresh) hold_a_proxy();
    return 0;
}

namespace mp_fuzz {

void write_seeds() {
    // What save_ref writes after the address and key, for the object of
    // each kind this target makes (ids count from 1 on a fresh server).
    std::vector<std::vector<std::string>> exposed = {
        {"add", "note", "table", "value"}, {"greet", "twice"}, {"next"},
        {"clear", "contains", "erase", "find", "get", "items", "keys", "set", "size", "update"},
        {"append", "clear", "extend", "get", "items", "pop", "set", "size"}, {"get", "set"},
        {"full", "get", "put", "size"}, {"acquire", "locked", "release"}, {"clear", "is_set", "set", "wait"}};
    for (std::size_t i = 0; i < objects().size(); ++i) {
        mp::detail::output_archive ar;
        ar(std::uint64_t{i + 1}, std::string(objects()[i].type), exposed[i], objects()[i].proxy_tag);
        if (i == 2) ar(std::uint32_t{2});  // a generator proxy's batch
        mp_fuzz::write_seed(std::string("proxy-") + objects()[i].type,
                            mp_fuzz::prefixed({static_cast<std::uint8_t>(i)}, mp_fuzz::flatten(ar)));
        if (i == 0)  // the same, received as a program's first proxy of the server
            mp_fuzz::write_seed("fresh-proxy-counter", mp_fuzz::prefixed({fresh_selector}, mp_fuzz::flatten(ar)));
    }
    auto value = mp_fuzz::encode(stored{{"a", 1}, {"b", -2}});
    mp_fuzz::write_seed("stored-value", mp_fuzz::prefixed({static_cast<std::uint8_t>(objects().size())}, value));
}

}  // namespace mp_fuzz
