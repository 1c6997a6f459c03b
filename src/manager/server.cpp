// The manager's server: accept loop, one thread per connection, the object
// table, the shared types of mp::manager and the registered types.
#include "manager/server.hpp"

#include <sys/uio.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <iostream>
#include <list>

#include "manager/auth.hpp"
#include "manager/protocol.hpp"
#include "sys/net.hpp"
#include "sys/sys.hpp"

namespace mp::detail::mgr {

/// The client of the current call hung up while the call waited.
struct client_gone {};

struct wait_context {
    int fd;
    const std::atomic<bool>* stopping;
};

/// A call that waits (a lock's acquire, a queue's get) wakes this often to
/// notice that its client hung up or the server is stopping. Trade-off:
/// shorter slices notice sooner and cost more wake-ups while waiting.
constexpr auto wait_slice = std::chrono::milliseconds(50);

/// Waits on `cv` until ready() (true), `timeout_ns` passes (false; -1 never),
/// the server stops (mp::closed_error) or the client hangs up (client_gone).
template <class Ready>
bool wait_for(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, std::int64_t timeout_ns,
              const wait_context& ctx, Ready ready) {
    if (ready()) return true;
    if (timeout_ns == 0) return false;
    std::optional<clock::time_point> deadline;
    if (timeout_ns > 0) deadline = clock::now() + std::chrono::nanoseconds(timeout_ns);
    for (;;) {
        auto until = clock::now() + wait_slice;
        if (deadline && *deadline < until) until = *deadline;
        cv.wait_until(lock, until);
        // The client first: an item must not go to a caller that has hung up.
        if (sys::peer_closed(ctx.fd)) throw client_gone{};
        if (ready()) return true;
        if (deadline && clock::now() >= *deadline) return false;
        if (ctx.stopping->load()) throw closed_error("mp: the manager's server is shutting down");
    }
}

class server_object {
public:
    virtual ~server_object() = default;
    virtual void call(const std::string& method, std::uint64_t args_tag, std::uint64_t result_tag, input_archive& in,
                      output_archive& out, const wait_context& ctx) = 0;
};

namespace {

[[noreturn]] void no_method(std::string_view type, const std::string& method) {
    throw not_exposed_error("mp: manager: '" + std::string(type) + "' has no method '" + method +
                            "' that a proxy may call");
}

template <class Tuple>
Tuple args_of(input_archive& in) {
    auto t = load_value<Tuple>(in);
    if (in.remaining() != 0)
        throw serialization_error("mp: manager: a request carried " + std::to_string(in.remaining()) +
                                  " bytes more than its arguments take");
    return t;
}

/// The shared types: values are opaque bytes; the element tag the object was
/// made with must come with every call.
class shared_object : public server_object {
public:
    shared_object(std::string_view type, std::uint64_t element_tag) : type_(type), element_tag_(element_tag) {}

    void call(const std::string& method, std::uint64_t args_tag, std::uint64_t, input_archive& in, output_archive& out,
              const wait_context& ctx) final {
        if (args_tag != element_tag_)
            throw serialization_error("mp: manager: this " + type_ +
                                      " holds another element type than the proxy used to call it; use a proxy of the "
                                      "type it was made with");
        run(method, in, out, ctx);
    }

protected:
    virtual void run(const std::string& method, input_archive& in, output_archive& out, const wait_context& ctx) = 0;
    [[noreturn]] void unknown(const std::string& method) const { no_method(type_, method); }

    std::string type_;
    std::uint64_t element_tag_;
};

using bytes = std::string;

class dict_object final : public shared_object {
public:
    using shared_object::shared_object;

private:
    void run(const std::string& m, input_archive& in, output_archive& out, const wait_context&) override {
        std::lock_guard guard(mutex_);
        if (m == "get") {
            auto [k] = args_of<std::tuple<bytes>>(in);
            auto it = index_.find(k);
            if (it == index_.end()) throw std::out_of_range("mp: manager dict: key not found");
            save_value(out, it->second->second);
        } else if (m == "find") {
            auto [k] = args_of<std::tuple<bytes>>(in);
            auto it = index_.find(k);
            save_value(out, it == index_.end() ? std::optional<bytes>() : std::optional<bytes>(it->second->second));
        } else if (m == "set") {
            auto [k, v] = args_of<std::tuple<bytes, bytes>>(in);
            set(std::move(k), std::move(v));
        } else if (m == "erase") {
            auto [k] = args_of<std::tuple<bytes>>(in);
            auto it = index_.find(k);
            bool found = it != index_.end();
            if (found) {
                order_.erase(it->second);
                index_.erase(it);
            }
            save_value(out, found);
        } else if (m == "contains") {
            auto [k] = args_of<std::tuple<bytes>>(in);
            save_value(out, index_.count(k) != 0);
        } else if (m == "size") {
            args_of<std::tuple<>>(in);
            save_value(out, static_cast<std::uint64_t>(order_.size()));
        } else if (m == "clear") {
            args_of<std::tuple<>>(in);
            index_.clear();
            order_.clear();
        } else if (m == "keys") {
            args_of<std::tuple<>>(in);
            std::vector<bytes> keys;
            keys.reserve(order_.size());
            for (auto& [k, v] : order_) keys.push_back(k);
            save_value(out, keys);
        } else if (m == "items") {
            args_of<std::tuple<>>(in);
            std::vector<std::pair<bytes, bytes>> items(order_.begin(), order_.end());
            save_value(out, items);
        } else if (m == "update") {
            auto [pairs] = args_of<std::tuple<std::vector<std::pair<bytes, bytes>>>>(in);
            for (auto& [k, v] : pairs) set(std::move(k), std::move(v));
        } else {
            unknown(m);
        }
    }

    void set(bytes k, bytes v) {
        auto it = index_.find(k);
        if (it != index_.end()) {
            it->second->second = std::move(v);
            return;
        }
        order_.emplace_back(k, std::move(v));
        index_.emplace(std::move(k), std::prev(order_.end()));
    }

    std::mutex mutex_;
    std::list<std::pair<bytes, bytes>> order_;                              // guarded by mutex_; insertion order
    std::unordered_map<bytes, std::list<std::pair<bytes, bytes>>::iterator> index_;  // guarded by mutex_
};

class list_object final : public shared_object {
public:
    using shared_object::shared_object;

private:
    std::size_t at(std::int64_t i) const {
        auto n = static_cast<std::int64_t>(items_.size());
        std::int64_t j = i < 0 ? i + n : i;
        if (j < 0 || j >= n)
            throw std::out_of_range("mp: manager list: index " + std::to_string(i) + " out of range for a list of " +
                                    std::to_string(n) + " items");
        return static_cast<std::size_t>(j);
    }

    void run(const std::string& m, input_archive& in, output_archive& out, const wait_context&) override {
        std::lock_guard guard(mutex_);
        if (m == "append") {
            auto [v] = args_of<std::tuple<bytes>>(in);
            items_.push_back(std::move(v));
        } else if (m == "extend") {
            auto [vs] = args_of<std::tuple<std::vector<bytes>>>(in);
            for (auto& v : vs) items_.push_back(std::move(v));
        } else if (m == "get") {
            auto [i] = args_of<std::tuple<std::int64_t>>(in);
            save_value(out, items_[at(i)]);
        } else if (m == "set") {
            auto [i, v] = args_of<std::tuple<std::int64_t, bytes>>(in);
            items_[at(i)] = std::move(v);
        } else if (m == "pop") {
            auto [i] = args_of<std::tuple<std::int64_t>>(in);
            auto j = at(i);
            save_value(out, items_[j]);
            items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(j));
        } else if (m == "size") {
            args_of<std::tuple<>>(in);
            save_value(out, static_cast<std::uint64_t>(items_.size()));
        } else if (m == "clear") {
            args_of<std::tuple<>>(in);
            items_.clear();
        } else if (m == "items") {
            args_of<std::tuple<>>(in);
            save_value(out, items_);
        } else {
            unknown(m);
        }
    }

    std::mutex mutex_;
    std::vector<bytes> items_;  // guarded by mutex_
};

class value_object final : public shared_object {
public:
    value_object(std::string_view type, std::uint64_t tag, bytes initial)
        : shared_object(type, tag), value_(std::move(initial)) {}

private:
    void run(const std::string& m, input_archive& in, output_archive& out, const wait_context&) override {
        std::lock_guard guard(mutex_);
        if (m == "get") {
            args_of<std::tuple<>>(in);
            save_value(out, value_);
        } else if (m == "set") {
            auto [v] = args_of<std::tuple<bytes>>(in);
            value_ = std::move(v);
        } else {
            unknown(m);
        }
    }

    std::mutex mutex_;
    bytes value_;  // guarded by mutex_
};

class queue_object final : public shared_object {
public:
    queue_object(std::string_view type, std::uint64_t tag, std::uint64_t maxsize)
        : shared_object(type, tag), maxsize_(maxsize) {}

private:
    bool full() const { return maxsize_ != 0 && items_.size() >= maxsize_; }

    void run(const std::string& m, input_archive& in, output_archive& out, const wait_context& ctx) override {
        std::unique_lock lock(mutex_);
        if (m == "put") {
            auto [v, ns] = args_of<std::tuple<bytes, std::int64_t>>(in);
            bool ok = wait_for(lock, changed_, ns, ctx, [&] { return !full(); });
            if (ok) {
                items_.push_back(std::move(v));
                changed_.notify_all();
            }
            save_value(out, ok);
        } else if (m == "get") {
            auto [ns] = args_of<std::tuple<std::int64_t>>(in);
            bool ok = wait_for(lock, changed_, ns, ctx, [&] { return !items_.empty(); });
            std::optional<bytes> v;
            if (ok) {
                v = std::move(items_.front());
                items_.pop_front();
                changed_.notify_all();
            }
            save_value(out, v);
        } else if (m == "size") {
            args_of<std::tuple<>>(in);
            save_value(out, static_cast<std::uint64_t>(items_.size()));
        } else if (m == "full") {
            args_of<std::tuple<>>(in);
            save_value(out, full());
        } else {
            unknown(m);
        }
    }

    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<bytes> items_;  // guarded by mutex_
    std::uint64_t maxsize_;
};

class lock_object final : public shared_object {
public:
    using shared_object::shared_object;

private:
    void run(const std::string& m, input_archive& in, output_archive& out, const wait_context& ctx) override {
        std::unique_lock lock(mutex_);
        if (m == "acquire") {
            auto [ns] = args_of<std::tuple<std::int64_t>>(in);
            bool ok = wait_for(lock, changed_, ns, ctx, [&] { return !locked_; });
            if (ok) locked_ = true;
            save_value(out, ok);
        } else if (m == "release") {
            args_of<std::tuple<>>(in);
            if (!locked_) throw value_error("mp: manager lock: release() of a lock that is not held");
            locked_ = false;
            changed_.notify_one();
        } else if (m == "locked") {
            args_of<std::tuple<>>(in);
            save_value(out, locked_);
        } else {
            unknown(m);
        }
    }

    std::mutex mutex_;
    std::condition_variable changed_;
    bool locked_ = false;  // guarded by mutex_
};

class event_object final : public shared_object {
public:
    using shared_object::shared_object;

private:
    void run(const std::string& m, input_archive& in, output_archive& out, const wait_context& ctx) override {
        std::unique_lock lock(mutex_);
        if (m == "set") {
            args_of<std::tuple<>>(in);
            flag_ = true;
            changed_.notify_all();
        } else if (m == "clear") {
            args_of<std::tuple<>>(in);
            flag_ = false;
        } else if (m == "is_set") {
            args_of<std::tuple<>>(in);
            save_value(out, flag_);
        } else if (m == "wait") {
            auto [ns] = args_of<std::tuple<std::int64_t>>(in);
            save_value(out, wait_for(lock, changed_, ns, ctx, [&] { return flag_; }));
        } else {
            unknown(m);
        }
    }

    std::mutex mutex_;
    std::condition_variable changed_;
    bool flag_ = false;  // guarded by mutex_
};

const std::vector<std::string>& shared_exposed(std::string_view type) {
    static const std::unordered_map<std::string_view, std::vector<std::string>> names = {
        {"mp.dict", {"clear", "contains", "erase", "find", "get", "items", "keys", "set", "size", "update"}},
        {"mp.list", {"append", "clear", "extend", "get", "items", "pop", "set", "size"}},
        {"mp.value", {"get", "set"}},
        {"mp.queue", {"full", "get", "put", "size"}},
        {"mp.lock", {"acquire", "locked", "release"}},
        {"mp.event", {"clear", "is_set", "set", "wait"}},
    };
    static const std::vector<std::string> none;
    auto it = names.find(type);
    return it == names.end() ? none : it->second;
}

std::shared_ptr<server_object> make_shared_object(const std::string& type, input_archive& in) {
    auto [tag, initial, maxsize] = args_of<std::tuple<std::uint64_t, std::string, std::uint64_t>>(in);
    if (type == "mp.dict") return std::make_shared<dict_object>(type, tag);
    if (type == "mp.list") return std::make_shared<list_object>(type, tag);
    if (type == "mp.value") return std::make_shared<value_object>(type, tag, std::move(initial));
    if (type == "mp.queue") return std::make_shared<queue_object>(type, tag, maxsize);
    if (type == "mp.lock") return std::make_shared<lock_object>(type, tag);
    if (type == "mp.event") return std::make_shared<event_object>(type, tag);
    throw value_error("mp: manager: no shared type named '" + type + "'");
}

/// An object of a registered type, a generator's range or a module: runs
/// only the entry's own trampoline, one call at a time.
class registered_object final : public server_object {
public:
    registered_object(const type_entry& e, input_archive& args) : entry_(e) {
        e.trampoline(tramp_op::create, e.context, &object_, 0, &args, nullptr);
    }
    ~registered_object() override {
        try {
            entry_.trampoline(tramp_op::destroy, entry_.context, &object_, 0, nullptr, nullptr);
        } catch (...) {
            // A destructor that throws is the registered type's bug; the
            // server goes on.
        }
    }

    void call(const std::string& method, std::uint64_t args_tag, std::uint64_t result_tag, input_archive& in,
              output_archive& out, const wait_context&) override {
        const auto& ms = entry_.methods;
        auto it = std::find_if(ms.begin(), ms.end(), [&](const method_info& m) { return m.name == method; });
        if (it == ms.end()) no_method(entry_.name, method);
        if (std::find(entry_.exposed.begin(), entry_.exposed.end(), method) == entry_.exposed.end()) {
            std::string list;
            for (auto& n : entry_.exposed) list += (list.empty() ? "" : ", ") + n;
            throw not_exposed_error("mp: manager: method '" + method + "' of '" + entry_.name +
                                    "' is not exposed (exposed: " + list +
                                    "); list it in mp::exposed{...} when registering the type to call it");
        }
        if (args_tag != it->args_tag)
            throw serialization_error("mp: manager: " + entry_.name + "." + method + " takes arguments " +
                                      it->args_type +
                                      ", but the call passed other types or another number of arguments; pass "
                                      "exactly those types (or call it through call<&T::" + method + ">)");
        if (result_tag != 0 && result_tag != it->result_tag)
            throw serialization_error("mp: manager: " + entry_.name + "." + method + " returns " + it->result_type +
                                      ", but the call asked for another result type; call it with that type");
        auto index = static_cast<std::uint32_t>(it - ms.begin());
        {
            std::lock_guard guard(mutex_);
            entry_.trampoline(tramp_op::call, entry_.context, &object_, index, &in, &out);
        }
        // Output of the method appears in order with the caller's own.
        std::cout.flush();
        std::fflush(stdout);
        if (in.remaining() != 0)
            throw serialization_error("mp: manager: a request carried " + std::to_string(in.remaining()) +
                                      " bytes more than its arguments take");
    }

private:
    const type_entry& entry_;
    std::mutex mutex_;  // serializes calls: registered types need not be thread-safe
    void* object_ = nullptr;
};

}  // namespace
}  // namespace mp::detail::mgr

namespace mp {

using namespace detail::mgr;
using detail::input_archive;
using detail::output_archive;
using detail::save_value;
using detail::load_value;

manager_server::impl::impl(server_config config) : config_(std::move(config)) {
    for (const auto& e : config_.registry) entries_[e.name] = &e;
    constexpr int backlog = 128;
    if (auto* u = std::get_if<unix_address>(&config_.addr)) {
        listener_ = sys::listen_unix(u->path, backlog);
        socket_path_ = u->path;
        bound_ = config_.addr;
    } else {
        const auto& t = std::get<tcp_address>(config_.addr);
        listener_ = sys::listen_tcp(t.host, t.port, backlog);
        bound_ = tcp_address{t.host, sys::local_port(listener_.get())};
    }
    auto [r, w] = sys::socket_pair();
    wake_read_ = std::move(r);
    wake_write_ = std::move(w);
}

manager_server::impl::~impl() {
    stop();
    // serve_forever() has returned (it holds a reference to us while it runs).
    if (!socket_path_.empty()) sys::remove_private_dir({}, socket_path_);
}

void manager_server::impl::stop() noexcept {
    stopping_ = true;
    if (wake_write_) {
        char byte = 1;
        try {
            ::iovec one{&byte, 1};
            sys::send_all(wake_write_.get(), std::span<const ::iovec>(&one, 1));
        } catch (...) {
        }
    }
}

void manager_server::impl::reap_finished_connections() {
    std::list<connection_slot> finished;
    {
        std::lock_guard guard(connections_mutex_);
        for (auto it = connections_.begin(); it != connections_.end();) {
            auto next = std::next(it);
            if (it->done) finished.splice(finished.end(), connections_, it);
            it = next;
        }
    }
    for (auto& s : finished) s.thread.join();
}

void manager_server::impl::serve_forever() {
    if (serving_.exchange(true)) throw process_error("mp: manager_server::serve_forever() was already called");
    int fds[2] = {listener_.get(), wake_read_.get()};
    while (!stopping_) {
        auto ready = sys::wait_any_readable(fds, std::nullopt);
        if (stopping_ || std::find(ready.begin(), ready.end(), 1) != ready.end()) break;
        auto fd = sys::accept_connection(listener_.get());
        reap_finished_connections();
        if (!fd) {
            // Out of fds or the peer left: back off a moment instead of spinning.
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            continue;
        }
        std::lock_guard guard(connections_mutex_);
        auto& slot = connections_.emplace_back();
        slot.ch = std::make_unique<channel>(std::move(fd));
        slot.thread = std::thread([this, &slot] { serve_connection(slot); });
    }
    stopping_ = true;
    listener_.reset();
    if (!socket_path_.empty()) sys::remove_private_dir({}, socket_path_);
    // Wake every connection thread (blocked reading, or waiting in a call,
    // which notices stopping_ within a wait slice), then wait for them.
    std::list<connection_slot> all;
    {
        std::lock_guard guard(connections_mutex_);
        for (auto& s : connections_) {
            std::lock_guard inner(s.mutex);
            if (s.ch) s.ch->shutdown();
        }
        all.splice(all.end(), connections_);
    }
    for (auto& s : all) s.thread.join();
    std::unordered_map<std::uint64_t, slot> objects;
    {
        std::lock_guard guard(objects_mutex_);
        objects.swap(objects_);
    }
    objects.clear();  // destroys the objects, outside the lock
}

void manager_server::impl::serve_connection(connection_slot& slot) {
    channel* ch = slot.ch.get();
    auto finish = [&] {
        std::lock_guard guard(slot.mutex);
        slot.ch.reset();
        slot.done = true;
    };
    try {
        authenticate_client(*ch, config_.authkey, clock::now() + std::chrono::milliseconds(config_.handshake_ms));
    } catch (...) {
        // Wrong key, garbage, silence, or a peer that left: drop only this connection.
        finish();
        return;
    }
    std::vector<std::byte> buffer;
    for (;;) {
        std::span<const std::byte> body;
        try {
            body = ch->receive(config_.max_message, std::nullopt, clock::duration::zero());
        } catch (const frame_error& e) {
            // Garbage or an oversized length prefix: say why, then hang up
            // (the stream cannot be resynchronised).
            try {
                output_archive out(std::move(buffer));
                channel::begin(out);
                save_value(out, static_cast<std::uint8_t>(status::error));
                save_value(out, detail::capture_exception(std::current_exception()));
                ch->send(out);
            } catch (...) {
            }
            break;
        } catch (...) {
            break;  // the client left (or the server is stopping)
        }
        std::optional<output_archive> out;
        out.emplace(std::move(buffer));
        channel::begin(*out);
        save_value(*out, static_cast<std::uint8_t>(status::ok));
        bool stop_after = false;
        try {
            input_archive in(body);
            in.set_data_only();  // SPEC §8: a request never carries code
            handle(in, *out, ch->fd(), stop_after);
            if (out->size() - header_size > config_.max_message)
                throw value_error("mp: manager: the result is " + std::to_string(out->size()) +
                                  " bytes, more than max_message_size (" + std::to_string(config_.max_message) +
                                  "); raise the limit or return less per call");
        } catch (const client_gone&) {
            break;
        } catch (...) {
            auto record = detail::capture_exception(std::current_exception());
            auto reuse = out->take_buffer();
            out.emplace(std::move(reuse));
            channel::begin(*out);
            save_value(*out, static_cast<std::uint8_t>(status::error));
            save_value(*out, record);
        }
        try {
            ch->send(*out);
        } catch (...) {
            break;
        }
        buffer = out->take_buffer();
        if (stop_after) stop();
    }
    finish();
}

std::shared_ptr<server_object> manager_server::impl::find(std::uint64_t id) {
    std::lock_guard guard(objects_mutex_);
    auto it = objects_.find(id);
    if (it == objects_.end())
        throw value_error("mp: manager: no object with id " + std::to_string(id) +
                          " (it was released by every proxy, or never existed)");
    return it->second.object;
}

void manager_server::impl::handle(input_archive& in, output_archive& out, int fd, bool& stop_after) {
    auto code = static_cast<op>(load_value<std::uint8_t>(in));
    switch (code) {
        case op::call: {
            auto id = load_value<std::uint64_t>(in);
            auto method = load_value<std::string>(in);
            auto args_tag = load_value<std::uint64_t>(in);
            auto result_tag = load_value<std::uint64_t>(in);
            auto object = find(id);
            object->call(method, args_tag, result_tag, in, out, wait_context{fd, &stopping_});
            return;
        }
        case op::create: {
            auto type = load_value<std::string>(in);
            auto expect_tag = load_value<std::uint64_t>(in);
            auto args_tag = load_value<std::uint64_t>(in);
            std::shared_ptr<server_object> object;
            const std::vector<std::string>* exposed = nullptr;
            if (type.rfind("mp.", 0) == 0) {
                // Shared types: the proxy's element tag travels in the arguments.
                object = make_shared_object(type, in);
                exposed = &shared_exposed(type);
            } else {
                auto it = entries_.find(type);
                if (it == entries_.end())
                    throw value_error("mp: manager: no type named '" + type +
                                      "' is registered with this manager; register it before start()");
                const type_entry& e = *it->second;
                if (expect_tag != e.class_tag)
                    throw serialization_error("mp: manager: '" + type + "' was registered for " + e.class_name +
                                              ", but a proxy of another type asked for it; make it with that type");
                if (args_tag != e.create_args_tag)
                    throw serialization_error("mp: manager: '" + type + "' is made with arguments " +
                                              (e.create_args_type.empty() ? "()" : e.create_args_type) +
                                              ", but the request passed other types or another number of them");
                object = std::make_shared<registered_object>(e, in);
                exposed = &e.exposed;
            }
            if (in.remaining() != 0) throw serialization_error("mp: manager: a create request carried extra bytes");
            std::uint64_t id;
            {
                std::lock_guard guard(objects_mutex_);
                id = next_id_++;
                objects_[id] = {std::move(object), 1};
            }
            save_value(out, id);
            save_value(out, *exposed);
            return;
        }
        case op::incref:
        case op::decref: {
            auto id = load_value<std::uint64_t>(in);
            std::shared_ptr<server_object> released;  // destroyed outside the lock
            std::lock_guard guard(objects_mutex_);
            auto it = objects_.find(id);
            if (it == objects_.end())
                throw value_error("mp: manager: no object with id " + std::to_string(id) +
                                  " (it was released by every proxy before this one arrived; keep the sender's "
                                  "proxy alive until the receiver has it)");
            if (code == op::incref) {
                ++it->second.refs;
            } else if (--it->second.refs <= 0) {
                released = std::move(it->second.object);
                objects_.erase(it);
            }
            return;
        }
        case op::shutdown: stop_after = true; return;
        case op::ping: return;
    }
    throw serialization_error("mp: manager: unknown request code " + std::to_string(static_cast<int>(code)));
}

}  // namespace mp
