// The manager's server: the object table, and one typed path for every
// object it hosts — registered types, generators, modules and the built-in
// shared types alike (exposure, argument tuple, result type checked on
// every call).
#include "manager/server.hpp"

#include <algorithm>
#include <cstdio>
#include <iostream>

#include "manager/builtin_types.hpp"
#include "manager/client.hpp"
#include "manager/protocol.hpp"
#include "sys/net.hpp"
#include "sys/sys.hpp"

namespace mp::detail::mgr {

/// One object in the server: made, called and destroyed only through its
/// entry's trampoline.
class hosted_object {
public:
    hosted_object(const type_entry& e, std::uint64_t kind_tag, input_archive& args) : entry_(e), kind_tag_(kind_tag) {
        e.trampoline(tramp_op::create, e.context, &object_, 0, &args, nullptr);
    }
    ~hosted_object() {
        try {
            entry_.trampoline(tramp_op::destroy, entry_.context, &object_, 0, nullptr, nullptr);
        } catch (...) {
            // A destructor that throws is the registered type's bug; the
            // server goes on.
        }
    }
    hosted_object(const hosted_object&) = delete;
    hosted_object& operator=(const hosted_object&) = delete;

    /// The proxy type it was made for.
    [[nodiscard]] std::uint64_t kind_tag() const noexcept { return kind_tag_; }
    [[nodiscard]] const type_entry& entry() const noexcept { return entry_; }

    void call(const std::string& method, std::uint64_t args_tag, std::uint64_t result_tag, input_archive& in,
              output_archive& out, const wait_context& ctx) {
        const auto& ms = entry_.methods;
        auto it = std::find_if(ms.begin(), ms.end(), [&](const method_info& m) { return m.name == method; });
        if (it == ms.end())
            throw not_exposed_error("mp: manager: '" + entry_.name + "' has no method '" + method +
                                    "' that a proxy may call");
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
            call_scope waiting(ctx);
            if (entry_.concurrent) {
                entry_.trampoline(tramp_op::call, entry_.context, &object_, index, &in, &out);
            } else {
                std::lock_guard guard(mutex_);  // registered types need not be thread-safe
                entry_.trampoline(tramp_op::call, entry_.context, &object_, index, &in, &out);
            }
        }
        if (!entry_.concurrent) {
            // Output of the method appears in order with the caller's own.
            std::cout.flush();
            std::fflush(stdout);
        }
        if (in.remaining() != 0)
            throw serialization_error("mp: manager: a request carried " + std::to_string(in.remaining()) +
                                      " bytes more than its arguments take");
    }

private:
    const type_entry& entry_;
    std::uint64_t kind_tag_;
    std::mutex mutex_;  // serializes calls unless the entry is concurrent
    void* object_ = nullptr;
};

}  // namespace mp::detail::mgr

namespace mp {

using namespace detail::mgr;
using detail::input_archive;
using detail::load_value;
using detail::output_archive;
using detail::save_value;

manager_server::impl::impl(server_config config) : config_(std::move(config)) {
    for (const auto& e : builtin_entries()) entries_[e.name] = &e;
    for (const auto& e : config_.registry) entries_[e.name] = &e;
    // The kernel caps it at net.core.somaxconn; the loop drains it quickly.
    constexpr int backlog = 4096;
    detail::unique_fd listener;
    if (auto* u = std::get_if<unix_address>(&config_.addr)) {
        listener = sys::listen_unix(u->path, backlog);
        socket_path_ = u->path;
        bound_ = config_.addr;
    } else {
        const auto& t = std::get<tcp_address>(config_.addr);
        listener = sys::listen_tcp(t.host, t.port, backlog);
        bound_ = tcp_address{t.host, sys::local_port(listener.get())};
    }
    serve_limits limits;
    limits.handshake_timeout = std::chrono::milliseconds(config_.handshake_ms);
    limits.idle_timeout = std::chrono::milliseconds(config_.idle_ms);
    limits.max_message = static_cast<std::size_t>(config_.max_message);
    limits.max_pending = static_cast<std::size_t>(config_.max_pending);
    limits.max_workers = static_cast<std::size_t>(config_.max_workers);
    loop_ = std::make_unique<serve_loop>(std::move(listener), config_.authkey, limits, *this);
    // Proxies of its own objects, sent back in requests, name this server.
    remember_server(bound_, config_.authkey);
}

manager_server::impl::~impl() {
    loop_.reset();  // stops serving, joins the workers, closes every connection
    objects_.clear();
    if (!socket_path_.empty()) sys::remove_private_dir({}, socket_path_);
}

void manager_server::impl::stop() noexcept { loop_->stop(); }

void manager_server::impl::serve_forever() {
    if (serving_.exchange(true)) throw process_error("mp: manager_server::serve_forever() was already called");
    loop_->run();
    if (!socket_path_.empty()) sys::remove_private_dir({}, socket_path_);
    socket_path_.clear();
    std::unordered_map<std::uint64_t, slot> objects;
    {
        std::lock_guard guard(objects_mutex_);
        objects.swap(objects_);
    }
    objects.clear();  // destroys the objects, outside the lock
}

std::shared_ptr<hosted_object> manager_server::impl::find(std::uint64_t id) {
    std::lock_guard guard(objects_mutex_);
    auto it = objects_.find(id);
    if (it == objects_.end())
        throw value_error("mp: manager: no object with id " + std::to_string(id) +
                          " (it was released by every proxy, or never existed)");
    return it->second.object;
}

void manager_server::impl::handle(input_archive& in, output_archive& out, const wait_context& ctx, bool& stop_after) {
    // A proxy among the arguments may name only a server this one knows.
    manager_data_scope from_a_client;
    auto code = static_cast<op>(load_value<std::uint8_t>(in));
    switch (code) {
        case op::call: {
            auto id = load_value<std::uint64_t>(in);
            auto method = load_value<std::string>(in);
            auto args_tag = load_value<std::uint64_t>(in);
            auto result_tag = load_value<std::uint64_t>(in);
            find(id)->call(method, args_tag, result_tag, in, out, ctx);
            return;
        }
        case op::create: {
            auto type = load_value<std::string>(in);
            auto expect_tag = load_value<std::uint64_t>(in);
            auto args_tag = load_value<std::uint64_t>(in);
            auto it = entries_.find(type);
            if (it == entries_.end())
                throw value_error("mp: manager: no type named '" + type +
                                  "' is registered with this manager; register it before start()");
            const type_entry& e = *it->second;
            // Built-ins (class_tag 0) serve any proxy of theirs; the object
            // remembers which.
            if (e.class_tag != 0 && expect_tag != e.class_tag)
                throw serialization_error("mp: manager: '" + type + "' was registered for " + e.class_name +
                                          ", but a proxy of another type asked for it; make it with that type");
            if (args_tag != e.create_args_tag)
                throw serialization_error("mp: manager: '" + type + "' is made with arguments " +
                                          (e.create_args_type.empty() ? "()" : e.create_args_type) +
                                          ", but the request passed other types or another number of them");
            auto object = std::make_shared<hosted_object>(e, expect_tag, in);
            if (in.remaining() != 0) throw serialization_error("mp: manager: a create request carried extra bytes");
            std::uint64_t id;
            {
                std::lock_guard guard(objects_mutex_);
                id = next_id_++;
                objects_[id] = {std::move(object), 1};
            }
            save_value(out, id);
            save_value(out, e.exposed);
            return;
        }
        case op::incref:
        case op::decref: {
            auto id = load_value<std::uint64_t>(in);
            std::optional<std::uint64_t> kind;
            if (code == op::incref) kind = load_value<std::uint64_t>(in);
            std::shared_ptr<hosted_object> released;  // destroyed outside the lock
            std::lock_guard guard(objects_mutex_);
            auto it = objects_.find(id);
            if (it == objects_.end())
                throw value_error("mp: manager: no object with id " + std::to_string(id) +
                                  " (it was released by every proxy before this one arrived; keep the sender's "
                                  "proxy alive until the receiver has it)");
            if (code == op::incref) {
                if (*kind != it->second.object->kind_tag())
                    throw serialization_error("mp: manager: object " + std::to_string(id) + " ('" +
                                              it->second.object->entry().name +
                                              "') was made for another proxy type than the one that received it");
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

namespace mp::detail::mgr {

test_reply serve_request_for_test(manager_server& server, std::span<const std::byte> request,
                                  const wait_context& ctx) {
    // Reused from reply to reply, as a connection's reply buffer is.
    thread_local std::vector<std::byte> reply_buffer;
    auto& impl = server_access::of(server);
    test_reply r;
    std::optional<output_archive> out;
    if (reply_to(impl, request, ctx, static_cast<std::size_t>(impl.max_message()), std::move(reply_buffer), out,
                 r.stop_requested)) {
        // The bytes the serve loop would send after the frame header,
        // borrowed blocks included.
        auto& body = r.body.emplace();
        body.reserve(out->size() - header_size);
        std::size_t skip = header_size;
        out->for_each_piece([&](const std::byte* p, std::size_t n) {
            std::size_t s = std::min(skip, n);
            skip -= s;
            body.insert(body.end(), p + s, p + n);
        });
    }
    if (out) reply_buffer = out->take_buffer();
    return r;
}

}  // namespace mp::detail::mgr

