// fuzz_worker_message — the messages between a pool and its workers
// (src/worker/protocol.hpp):
//
//   task   [code_ref of the entry][callable][arguments], run by the real
//          worker loop (run_worker_loop) through an in-memory channel: the
//          worker must send exactly one result for it, a value or a failure,
//          and never crash.
//   result [u8 kind][u64 id][u8 status][u32 claim][value | exception_record],
//          decoded as the pool's result thread does (src/transport/shm/
//          shm_transport.cpp, mirrored here for the header) into a
//          real call_job: its future must then hold a value or an exception.
//
// Input: [u8 selector][body]. selector < entries: a task for that entry (its
// code_ref is written here, the fuzz bytes are its callable and arguments);
// then the results; the last selector passes the whole task body raw,
// code_ref included: the worker must refuse a code_ref that names no
// function of this program (src/code_ref.cpp checks it) rather than call it.
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "fuzz_support.hpp"
#include "mp/detail/task.hpp"
#include "mp/function.hpp"
#include "worker/protocol.hpp"

namespace {

namespace d = mp::detail;
namespace w = mp::detail::worker;

// The task functions wrap around rather than overflow: the fuzz bytes are
// their arguments, and an overflow would be this file's bug, not mp's.
int add(int a, int b) { return static_cast<int>(static_cast<unsigned>(a) + static_cast<unsigned>(b)); }
std::string join(std::vector<std::string> parts, std::string sep) {
    std::string out;
    for (auto& p : parts) out += (out.empty() ? "" : sep) + p;
    return out;
}
std::int64_t square(std::int64_t x) { return static_cast<std::int64_t>(static_cast<std::uint64_t>(x) * static_cast<std::uint64_t>(x)); }
double ratio(int a, int b) {
    if (b == 0) throw std::domain_error("division by zero");
    return static_cast<double>(a) / b;
}
void nothing(std::vector<double>) {}
template <class R>
R make_default() {
    return R{};
}

struct scaler {  // a serializable function object
    double factor = 1;
    double operator()(double x) const { return factor * x; }  // floating point: no overflow UB
    template <class Archive>
    void serialize(Archive& ar) {
        ar(factor);
    }
};

const std::vector<d::code_ref>& entries() {
    static const std::vector<d::code_ref> refs = {
        d::code_ref_of(&d::call_entry<mp::fn_t<&add>, int, int, int>),
        d::code_ref_of(&d::call_entry<mp::fn_t<&join>, std::string, std::vector<std::string>, std::string>),
        d::code_ref_of(&d::call_entry<mp::fn_t<&nothing>, void, std::vector<double>>),
        d::code_ref_of(&d::call_entry<scaler, double, double>),
        d::code_ref_of(&d::chunk_entry<mp::fn_t<&square>, std::int64_t, std::int64_t, false>),
        d::code_ref_of(&d::chunk_entry<mp::fn_t<&ratio>, double, std::tuple<int, int>, true>),
    };
    return refs;
}

// One task in, the results out, as a transport would carry them.
class memory_channel final : public w::worker_channel {
public:
    explicit memory_channel(std::vector<std::byte> body) : body_(std::move(body)) {}
    bool receive(w::received_task& task) override {
        if (given_) return false;
        given_ = true;
        task.id = 7;
        task.body = std::move(body_);
        return true;
    }
    void send(const d::output_archive& result) override { results_.push_back(mp_fuzz::flatten(result)); }
    void finished() noexcept override {}
    const std::vector<std::vector<std::byte>>& results() const { return results_; }

private:
    std::vector<std::byte> body_;
    bool given_ = false;
    std::vector<std::vector<std::byte>> results_;
};

void run_task(std::vector<std::byte> body) {
    memory_channel channel(std::move(body));
    w::run_worker_loop(channel, 1);
    if (channel.results().size() != 1) mp_fuzz::fail("the worker did not send exactly one result for a task");
    // The worker's own result must decode: kind, the task's id, a status.
    d::input_archive in(channel.results()[0]);
    auto kind = d::load_value<std::uint8_t>(in);
    auto id = d::load_value<std::uint64_t>(in);
    auto status = d::load_value<std::uint8_t>(in);
    (void)d::load_value<std::uint32_t>(in);  // the task's claim, echoed
    if (kind != static_cast<std::uint8_t>(w::result_kind::done) || id != 7 || status > 1)
        mp_fuzz::fail("the worker's result header is not [done][task id][ok|failed][claim]");
    if (status == static_cast<std::uint8_t>(w::result_status::failed))
        (void)d::load_value<d::exception_record>(in);
}

// The parent's side: a result message for a call of `R`.
template <class R>
void deliver_result(std::span<const std::byte> bytes) {
    auto job = d::call_job<R>::make(mp::fn<&make_default<R>>);
    auto future = job->get_future();
    d::input_archive in(bytes);
    std::uint8_t kind = 0, status = 0;
    std::uint64_t id = 0;
    std::uint32_t claim = 0;
    if (!mp_fuzz::decoded([&] { in(kind, id, status, claim); })) return;
    if (kind != static_cast<std::uint8_t>(w::result_kind::done)) return;  // the pool drops other kinds
    if (status == static_cast<std::uint8_t>(w::result_status::ok)) {
        try {
            job->on_value(0, in);
        } catch (...) {
            job->on_error(0, std::current_exception());
        }
    } else {
        std::exception_ptr e;
        try {
            auto record = d::load_value<d::exception_record>(in);
            e = d::rebuild_exception(record);
        } catch (...) {
            e = std::current_exception();
        }
        job->on_error(0, e);
    }
    if (!future.done()) mp_fuzz::fail("a delivered result left its future pending");
    try {
        (void)future.get();
    } catch (const std::exception&) {
    }
}

// A chunk's result, decoded as chunked_job::on_value does.
template <class R>
void deliver_chunk(std::span<const std::byte> bytes) {
    mp_fuzz::decoded([&] {
        d::input_archive in(bytes);
        auto values = d::load_value<std::vector<R>>(in);
        auto errors = d::load_value<std::vector<d::chunk_error>>(in);
        for (auto& e : errors)
            if (e.index < values.size()) (void)d::rebuild_exception(e.record);
    });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::size_t n = entries().size();
    std::size_t which = data[0] % (n + 5);
    auto body = mp_fuzz::as_bytes(data + 1, size - 1);
    if (which < n) {
        d::output_archive task;
        task(entries()[which]);
        auto bytes = mp_fuzz::flatten(task);
        bytes.insert(bytes.end(), body.begin(), body.end());
        run_task(std::move(bytes));
    } else if (which == n) {
        deliver_result<std::int64_t>(body);
    } else if (which == n + 1) {
        deliver_result<std::vector<std::string>>(body);
    } else if (which == n + 2) {
        deliver_chunk<double>(body);
    } else if (which == n + 3) {
        deliver_chunk<std::string>(body);
    } else {
        run_task(std::vector<std::byte>(body.begin(), body.end()));
    }
    return 0;
}

namespace mp_fuzz {

void write_seeds() {
    auto with = [](std::uint8_t selector, auto&&... values) {
        d::output_archive ar;
        (d::save_value(ar, values), ...);
        return mp_fuzz::prefixed({selector}, mp_fuzz::flatten(ar));
    };
    // Tasks: the callable (nothing for mp::fn, the object for scaler) and the arguments.
    mp_fuzz::write_seed("task-add", with(0, 2, 40));
    mp_fuzz::write_seed("task-join", with(1, std::vector<std::string>{"a", "b"}, std::string(", ")));
    mp_fuzz::write_seed("task-void", with(2, std::vector<double>{1, 2}));
    mp_fuzz::write_seed("task-scaler", with(3, scaler{2.5}, 4.0));
    mp_fuzz::write_seed("task-chunk", with(4, std::vector<std::int64_t>{1, 2, 3}));
    mp_fuzz::write_seed("task-starchunk", with(5, std::vector<std::tuple<int, int>>{{1, 2}, {3, 0}}));
    const std::uint8_t n = static_cast<std::uint8_t>(entries().size());
    auto header = [](std::uint8_t status) {
        return std::make_tuple(static_cast<std::uint8_t>(w::result_kind::done), std::uint64_t{7}, status,
                               std::uint32_t{0});
    };
    auto result = [&](std::uint8_t selector, std::uint8_t status, auto&& value) {
        d::output_archive ar;
        auto [k, id, s, claim] = header(status);
        ar(k, id, s, claim);
        d::save_value(ar, value);
        return mp_fuzz::prefixed({selector}, mp_fuzz::flatten(ar));
    };
    mp_fuzz::write_seed("result-int", result(n, 0, std::int64_t{9}));
    mp_fuzz::write_seed("result-failed", result(n, 1, d::exception_record{"std::domain_error", "no", "", 0}));
    mp_fuzz::write_seed("result-strings", result(n + 1, 0, std::vector<std::string>{"x", "yy"}));
    d::output_archive chunk;
    d::save_value(chunk, std::vector<double>{1.5, 0});
    d::save_value(chunk, std::vector<d::chunk_error>{{1, {"std::domain_error", "division by zero", "", 0}}});
    mp_fuzz::write_seed("chunk-double", mp_fuzz::prefixed({static_cast<std::uint8_t>(n + 2)}, mp_fuzz::flatten(chunk)));
    mp_fuzz::write_seed("chunk-string", with(n + 3, std::vector<std::string>{"s"}, std::vector<d::chunk_error>{}));
    // The raw form: the whole task body as a worker receives it.
    d::output_archive raw;
    raw(entries()[0]);
    d::save_value(raw, 1);
    d::save_value(raw, 2);
    mp_fuzz::write_seed("task-raw", mp_fuzz::prefixed({static_cast<std::uint8_t>(n + 4)}, mp_fuzz::flatten(raw)));
}

}  // namespace mp_fuzz
