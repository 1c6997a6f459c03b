// mpi/wire.hpp — how rank 0 and the worker ranks talk: one communicator,
// a few tags, and whole messages sent from archives.
//
// The task and result messages are those of src/worker/protocol.hpp, byte
// for byte (one protocol, two transports); MPI only adds a small envelope
// (which executor a task or result belongs to, as the engine numbers tasks
// per executor; a task's deadline) and the control messages below. Messages between two ranks arrive in the order they were
// sent (MPI's non-overtaking rule, as every receive matches any tag), so an
// executor's `open` always precedes its tasks.
//
//   hello      worker -> rank 0   [i32 rank][string host][vector<module_build_id>]
//              rank 0 -> worker   (empty): the welcome, at start-up
//   open       rank 0 -> worker   [u32 executor][i32 max_tasks_per_child][mp::function<void()> initializer]
//   task       rank 0 -> worker   [u32 executor][i64 timeout ns, -1: none][task message]
//   tasks      rank 0 -> worker   ([u64 size][a `task` message's bytes]) * n: several small tasks
//                                 that leave for one rank at once (results came back together)
//   result     worker -> rank 0   [u32 executor][result message]
//   results    worker -> rank 0   ([u64 size][a `result` message's bytes]) * n: several small
//                                 results that came back to back, in one message
//   stop_task  rank 0 -> worker   [u32 executor][u64 task id]: stop it (future.terminate())
//   close      rank 0 -> worker   [u32 executor][u8 terminate]
//   stop       rank 0 -> worker   (empty): serve no more, exit
//   pieces     either way         [i32 tag][i32 segment tag][u32 n][u64 size] * n, then n messages
//                                 with the segment tag: one message of `tag` in n segments
//                                 (send() splits a message with large borrowed blocks)
#pragma once

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "mp/detail/archive.hpp"
#include "mp/mpi.hpp"
#include "mpi/buffers.hpp"

namespace mp::detail::mpi_wire {

enum tag : int { hello = 101, open = 102, task = 103, result = 104, close = 105, stop = 106, stop_task = 107, pieces = 108, results = 109, tasks = 110 };

/// Where this process talks to its peers: in static mode MPI_COMM_WORLD with
/// rank 0 as the boss; in dynamic mode the intercommunicator of
/// MPI_Comm_spawn, where the boss is remote rank 0 (seen from a worker) and
/// the workers are remote ranks 0..n-1 (seen from the boss).
struct link {
    MPI_Comm comm = MPI_COMM_NULL;
    int boss = 0;                   // the boss's rank in `comm` (seen from a worker)
    std::vector<int> workers;       // worker ranks in `comm` (seen from the boss)
};

/// Throws mp::mpi_error "mp: <what> failed: <MPI's error string>" unless rc is MPI_SUCCESS.
void check(int rc, const char* what);

/// Sends `ar` as one message, without copying its large borrowed blocks
/// (each goes as a contiguous segment: see `pieces`). Throws mp::mpi_error,
/// and mp::serialization_error for a message of 2 GiB or more. Thread-safe.
void send(const output_archive& ar, int dest, int tag, MPI_Comm comm);

/// Sends that a sender does not wait for, or waits for without blocking a
/// receiver. Over shared memory a message over 4 KiB (OpenMPI's eager limit
/// there) is a rendezvous: a blocking MPI_Send returns only once the
/// receiver has polled and matched it, so each task or result of a few KiB
/// (a chunk of 1000 items) waited for the other side's next poll, one at a
/// time. Here every message goes with MPI_Isend and the polling loops
/// complete the sends (progress()). No thread that receives for its process
/// may wait for a send: rank 0 sends tasks under its lock, and a worker
/// rank's main thread (the one that receives its tasks) sends results, so a
/// blocking send of each crossing the other deadlocked both. Messages from
/// one thread to one rank arrive in the order they were sent. Thread-safe.
class send_queue {
public:
    /// A send from the caller's memory (send_in_place): it must stay
    /// unchanged until wait() returns.
    class in_place {
    public:
        [[nodiscard]] bool done() const noexcept { return pending_.load(std::memory_order_acquire) == 0; }

    private:
        friend class send_queue;
        std::atomic<std::size_t> pending_{0};  // its MPI requests not yet complete
        std::exception_ptr error_;             // an MPI_Isend failed
        std::vector<std::byte> copies_;        // the small pieces between large blocks, copied together
    };

    /// Messages from this size on are worth sending in place: copying a
    /// smaller one costs less than waiting for the receiver's next poll
    /// (an idle rank naps between polls).
    static constexpr std::size_t in_place_from = std::size_t{1} << 20;

    send_queue() = default;
    send_queue(const send_queue&) = delete;
    send_queue& operator=(const send_queue&) = delete;

    /// As mpi_wire::send, without waiting for the receiver: the message is
    /// copied first.
    void send(const output_archive& ar, int dest, int tag, MPI_Comm comm);
    /// As mpi_wire::send, from where the message is (the archive's buffer
    /// and its borrowed blocks, which a 256 MiB argument is): nothing large
    /// is copied. The caller keeps `ar` and what it borrows unchanged until
    /// wait() returns, and calls wait() from a thread that its process's
    /// receiving does not depend on. Throws as send() does, before sending.
    [[nodiscard]] std::shared_ptr<in_place> send_in_place(const output_archive& ar, int dest, int tag, MPI_Comm comm);
    /// Completes the sends (progress(), yielding the core) until `sent` is
    /// complete. Throws mp::mpi_error if one of its MPI_Isend failed.
    void wait(const in_place& sent);
    /// Sends bytes[offset, offset + size) from the vector itself, which the
    /// queue keeps until the send completes: a message written straight into
    /// a buffer (a batch, a queued task) is not copied again.
    void send_owned(std::vector<std::byte>&& bytes, std::size_t offset, std::size_t size, int dest, int tag,
                    MPI_Comm comm);
    /// The buffer of a completed send_owned, for the next message to be
    /// written into (its memory is mapped already); empty if none is spare.
    [[nodiscard]] std::vector<std::byte> reusable() noexcept;
    /// Completes the sends that can be (MPI_Testsome). From a polling loop.
    void progress() noexcept;
    /// Whether no send is pending.
    [[nodiscard]] bool idle() const noexcept { return pending_.load(std::memory_order_acquire) == 0; }
    /// Completes every pending send, waiting at most `limit`; the ones still
    /// pending then are cancelled (their receiver is gone). Before MPI_Finalize.
    void drain(std::chrono::milliseconds limit) noexcept;

private:
    struct buffer {
        std::unique_ptr<std::byte[]> copy;   // send(): a copy of the archive
        std::vector<std::byte> owned;        // send_owned(); send_in_place()'s header
        std::shared_ptr<in_place> borrowed;  // send_in_place(): told when this request completes
        bool reusable = false;               // `owned` may be handed out by reusable()
    };
    void start_locked(buffer&& bytes, const std::byte* data, std::size_t size, int dest, int tag, MPI_Comm comm);
    void start(buffer&& bytes, const std::byte* data, std::size_t size, int dest, int tag, MPI_Comm comm);
    static void completed(buffer& b) noexcept;
    static constexpr std::size_t max_spares = 4;

    std::mutex mutex_;
    std::vector<MPI_Request> requests_;        // guarded by mutex_
    std::vector<buffer> buffers_;              // guarded by mutex_: requests_[i] sends buffers_[i]
    std::vector<std::vector<std::byte>> spares_;  // guarded by mutex_: owned buffers of completed sends
    std::atomic<std::size_t> pending_{0};
};

/// A received message: its bytes, who sent it, its tag.
struct message {
    std::unique_ptr<std::byte[]> bytes;  // not zero-filled: the receive overwrites it
    std::shared_ptr<large_block> block;  // instead of `bytes` for a large message (from a block_pool)
    std::size_t size = 0;
    int source = -1;
    int tag = -1;
    [[nodiscard]] const std::byte* data() const noexcept { return block ? block->data() : bytes.get(); }
    [[nodiscard]] std::span<const std::byte> span() const noexcept { return {data(), size}; }
};

/// Receives one message if one is waiting (MPI_Improbe + MPI_Mrecv), from
/// `source` (or MPI_ANY_SOURCE); a split message whole, waiting for its
/// segments. A message of large_message_bytes or more goes into a block of
/// `large` (when given). Returns false at once if none is. One receiving
/// thread per process and communicator.
bool try_receive(message& out, int source, MPI_Comm comm, block_pool* large = nullptr);
/// Waits for one message from `source` with tag `tag` (start-up only).
message receive(int source, int tag, MPI_Comm comm);

/// A module's GNU build-id, as a worker reports it.
struct module_build_id {
    std::string path;      // "" for the main executable
    std::string build_id;  // lower-case hex; "" when the module has none
    template <class Archive>
    void serialize(Archive& ar) {
        ar(path, build_id);
    }
};

/// The build-ids of every module loaded in this process, the main
/// executable first.
std::vector<module_build_id> loaded_build_ids();

/// What a worker rank reports at start-up.
struct hello_report {
    int rank = -1;
    std::string host;
    std::vector<module_build_id> modules;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(rank, host, modules);
    }
};

/// This process's hello (the test hook MP_MPI_TEST_FAKE_BUILD_ID=<rank>
/// makes that rank report a changed build-id for its executable).
hello_report make_hello(int rank);

/// Empty when `worker` runs the same build as `boss`; otherwise the message
/// of the mp::mpi_error the executor's constructor throws.
std::string compare_builds(const hello_report& boss, const hello_report& worker);

/// The name of this host (MPI_Get_processor_name).
std::string host_name();

}  // namespace mp::detail::mpi_wire
