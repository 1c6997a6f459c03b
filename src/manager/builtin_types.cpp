// The built-in shared types of a manager server. Elements are the bytes a
// proxy serialized them to: the server needs no code for K, V or T, and two
// keys are equal when their bytes are (see mp/proxy.hpp).
#include "manager/builtin_types.hpp"

#include <deque>
#include <list>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "mp/manager.hpp"
#include "sys/net.hpp"

namespace mp::detail::mgr {

namespace {
thread_local const wait_context* current_call = nullptr;
}

call_scope::call_scope(const wait_context& ctx) noexcept : previous_(current_call) { current_call = &ctx; }
call_scope::~call_scope() { current_call = previous_; }

bool wait_until_ready(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, std::int64_t timeout_ns,
                      const std::function<bool()>& ready) {
    const wait_context* ctx = current_call;
    // A client that hung up before its call was served takes nothing (an
    // item, the lock) and waits for nothing: one poll per taking call.
    if (ctx && sys::peer_closed(ctx->fd)) throw client_gone{};
    if (ready()) return true;
    if (timeout_ns == 0 || (ctx && ctx->never_wait)) return false;
    std::optional<clock::time_point> deadline;
    if (timeout_ns > 0) deadline = clock::now() + std::chrono::nanoseconds(timeout_ns);
    for (;;) {
        auto until = clock::now() + wait_slice;
        if (deadline && *deadline < until) until = *deadline;
        cv.wait_until(lock, until);
        // The client first: an item must not go to a caller that has hung up.
        if (ctx && sys::peer_closed(ctx->fd)) throw client_gone{};
        if (ready()) return true;
        if (deadline && clock::now() >= *deadline) return false;
        if (ctx && ctx->stopping->load()) throw closed_error("mp: the manager's server is shutting down");
    }
}

using bytes = std::string;

/// Python's dict: insertion-ordered.
class shared_dict {
public:
    bytes get(const bytes& key) {
        std::lock_guard guard(mutex_);
        auto it = index_.find(key);
        if (it == index_.end()) throw std::out_of_range("mp: manager dict: key not found");
        return it->second->second;
    }
    std::optional<bytes> find(const bytes& key) {
        std::lock_guard guard(mutex_);
        auto it = index_.find(key);
        return it == index_.end() ? std::nullopt : std::optional<bytes>(it->second->second);
    }
    void set(bytes key, bytes value) {
        std::lock_guard guard(mutex_);
        put(std::move(key), std::move(value));
    }
    bool erase(const bytes& key) {
        std::lock_guard guard(mutex_);
        auto it = index_.find(key);
        if (it == index_.end()) return false;
        order_.erase(it->second);
        index_.erase(it);
        return true;
    }
    bool contains(const bytes& key) {
        std::lock_guard guard(mutex_);
        return index_.count(key) != 0;
    }
    std::uint64_t size() {
        std::lock_guard guard(mutex_);
        return order_.size();
    }
    void clear() {
        std::lock_guard guard(mutex_);
        index_.clear();
        order_.clear();
    }
    std::vector<bytes> keys() {
        std::lock_guard guard(mutex_);
        std::vector<bytes> out;
        out.reserve(order_.size());
        for (auto& kv : order_) out.push_back(kv.first);
        return out;
    }
    std::vector<std::pair<bytes, bytes>> items() {
        std::lock_guard guard(mutex_);
        return {order_.begin(), order_.end()};
    }
    void update(std::vector<std::pair<bytes, bytes>> pairs) {
        std::lock_guard guard(mutex_);
        for (auto& [k, v] : pairs) put(std::move(k), std::move(v));
    }

private:
    void put(bytes k, bytes v) {
        auto it = index_.find(k);
        if (it != index_.end()) {
            it->second->second = std::move(v);
            return;
        }
        order_.emplace_back(k, std::move(v));
        index_.emplace(std::move(k), std::prev(order_.end()));
    }

    std::mutex mutex_;
    std::list<std::pair<bytes, bytes>> order_;                                       // guarded by mutex_
    std::unordered_map<bytes, std::list<std::pair<bytes, bytes>>::iterator> index_;  // guarded by mutex_
};

/// Python's list; negative indexes count from the end.
class shared_list {
public:
    void append(bytes value) {
        std::lock_guard guard(mutex_);
        items_.push_back(std::move(value));
    }
    void extend(std::vector<bytes> values) {
        std::lock_guard guard(mutex_);
        for (auto& v : values) items_.push_back(std::move(v));
    }
    bytes get(std::int64_t i) {
        std::lock_guard guard(mutex_);
        return items_[at(i)];
    }
    void set(std::int64_t i, bytes value) {
        std::lock_guard guard(mutex_);
        items_[at(i)] = std::move(value);
    }
    bytes pop(std::int64_t i) {
        std::lock_guard guard(mutex_);
        auto j = at(i);
        bytes v = std::move(items_[j]);
        items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(j));
        return v;
    }
    std::uint64_t size() {
        std::lock_guard guard(mutex_);
        return items_.size();
    }
    void clear() {
        std::lock_guard guard(mutex_);
        items_.clear();
    }
    std::vector<bytes> items() {
        std::lock_guard guard(mutex_);
        return items_;
    }

private:
    std::size_t at(std::int64_t i) const {
        auto n = static_cast<std::int64_t>(items_.size());
        std::int64_t j = i < 0 ? i + n : i;
        if (j < 0 || j >= n)
            throw std::out_of_range("mp: manager list: index " + std::to_string(i) + " out of range for a list of " +
                                    std::to_string(n) + " items");
        return static_cast<std::size_t>(j);
    }

    std::mutex mutex_;
    std::vector<bytes> items_;  // guarded by mutex_
};

/// Python's manager.Value.
class shared_value {
public:
    explicit shared_value(bytes initial) : value_(std::move(initial)) {}
    bytes get() {
        std::lock_guard guard(mutex_);
        return value_;
    }
    void set(bytes value) {
        std::lock_guard guard(mutex_);
        value_ = std::move(value);
    }

private:
    std::mutex mutex_;
    bytes value_;  // guarded by mutex_
};

/// A FIFO queue, bounded when maxsize > 0. Timeouts in nanoseconds; -1: forever.
class shared_queue {
public:
    explicit shared_queue(std::uint64_t maxsize) : maxsize_(maxsize) {}
    bool put(bytes item, std::int64_t timeout_ns) {
        std::unique_lock lock(mutex_);
        if (!wait_until_ready(lock, changed_, timeout_ns, [&] { return !is_full(); })) return false;
        items_.push_back(std::move(item));
        changed_.notify_all();
        return true;
    }
    std::optional<bytes> get(std::int64_t timeout_ns) {
        std::unique_lock lock(mutex_);
        if (!wait_until_ready(lock, changed_, timeout_ns, [&] { return !items_.empty(); })) return std::nullopt;
        bytes v = std::move(items_.front());
        items_.pop_front();
        changed_.notify_all();
        return v;
    }
    std::uint64_t size() {
        std::lock_guard guard(mutex_);
        return items_.size();
    }
    bool full() {
        std::lock_guard guard(mutex_);
        return is_full();
    }

private:
    bool is_full() const { return maxsize_ != 0 && items_.size() >= maxsize_; }

    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<bytes> items_;  // guarded by mutex_
    std::uint64_t maxsize_;
};

/// Python's manager.Lock: any client may release it.
class shared_lock {
public:
    bool acquire(std::int64_t timeout_ns) {
        std::unique_lock lock(mutex_);
        if (!wait_until_ready(lock, changed_, timeout_ns, [&] { return !locked_; })) return false;
        locked_ = true;
        return true;
    }
    void release() {
        std::lock_guard guard(mutex_);
        if (!locked_) throw value_error("mp: manager lock: release() of a lock that is not held");
        locked_ = false;
        changed_.notify_one();
    }
    bool locked() {
        std::lock_guard guard(mutex_);
        return locked_;
    }

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    bool locked_ = false;  // guarded by mutex_
};

/// Python's manager.Event.
class shared_event {
public:
    void set() {
        std::lock_guard guard(mutex_);
        flag_ = true;
        changed_.notify_all();
    }
    void clear() {
        std::lock_guard guard(mutex_);
        flag_ = false;
    }
    bool is_set() {
        std::lock_guard guard(mutex_);
        return flag_;
    }
    bool wait(std::int64_t timeout_ns) {
        std::unique_lock lock(mutex_);
        return wait_until_ready(lock, changed_, timeout_ns, [&] { return flag_; });
    }

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    bool flag_ = false;  // guarded by mutex_
};

template <class T, class CreateArgs, auto... Ms>
type_entry builtin(std::string name, method_list<Ms...>) {
    auto e = object_entry<T, CreateArgs, Ms...>(std::move(name));
    e.concurrent = true;  // they lock for themselves, and a waiting call must not block the others
    for (auto& m : e.methods) e.exposed.push_back(m.name);
    return e;
}

}  // namespace mp::detail::mgr

namespace mp::detail::mgr {

const std::vector<type_entry>& builtin_entries() {
    static const std::vector<type_entry> entries = [] {
        std::vector<type_entry> v;
        v.push_back(builtin<shared_dict, std::tuple<>>(
            "mp.dict", methods<&shared_dict::get, &shared_dict::find, &shared_dict::set, &shared_dict::erase,
                               &shared_dict::contains, &shared_dict::size, &shared_dict::clear, &shared_dict::keys,
                               &shared_dict::items, &shared_dict::update>));
        v.push_back(builtin<shared_list, std::tuple<>>(
            "mp.list", methods<&shared_list::append, &shared_list::extend, &shared_list::get, &shared_list::set,
                               &shared_list::pop, &shared_list::size, &shared_list::clear, &shared_list::items>));
        v.push_back(builtin<shared_value, std::tuple<std::string>>("mp.value",
                                                                   methods<&shared_value::get, &shared_value::set>));
        v.push_back(builtin<shared_queue, std::tuple<std::uint64_t>>(
            "mp.queue", methods<&shared_queue::put, &shared_queue::get, &shared_queue::size, &shared_queue::full>));
        v.push_back(builtin<shared_lock, std::tuple<>>(
            "mp.lock", methods<&shared_lock::acquire, &shared_lock::release, &shared_lock::locked>));
        v.push_back(builtin<shared_event, std::tuple<>>(
            "mp.event", methods<&shared_event::set, &shared_event::clear, &shared_event::is_set, &shared_event::wait>));
        return v;
    }();
    return entries;
}

}  // namespace mp::detail::mgr
