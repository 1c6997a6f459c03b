#include "mpi/wire.hpp"

#include <elf.h>
#include <link.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "mp/error.hpp"
#include "mpi/layout.hpp"

namespace mp::detail::mpi_wire {

void check(int rc, const char* what) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING] = {};
    int len = 0;
    MPI_Error_string(rc, text, &len);
    throw mpi_error(std::string("mp: ") + what + " failed: " + std::string(text, static_cast<std::size_t>(len)));
}

namespace {

[[noreturn]] void too_large(std::size_t size) {
    throw serialization_error("mp: an MPI message of " + std::to_string(size) +
                              " bytes is too large: one task or result must stay under 2 GiB (split the data "
                              "into several tasks)");
}

}  // namespace

namespace {

// A message with a large borrowed block (a 256 MiB vector argument) goes out
// as several contiguous messages: a small `pieces` header, then each segment
// from where it is. Contiguous, a large block takes MPI's single-copy path
// (on one host: the receiver reads it from the sender's memory; measured
// here: a 256 MiB round trip in 1.9 s instead of 7.6 s as one message
// described by an MPI datatype, which goes through a pipeline of 32 KiB
// fragments that only moves while both ranks hold a core). The small pieces
// around the blocks are copied together into one segment between them.
constexpr std::size_t segment_threshold = std::size_t{256} << 10;
std::atomic<unsigned> next_segment_tag{0};

struct segment {
    const std::byte* data;
    std::size_t size;
    std::size_t copy_at;  // offset in `copies` of a copied segment; SIZE_MAX when sent in place
};

// A message with borrowed blocks, cut into segments: each large block
// alone, the pieces between them copied together into `copies`.
struct cut_message {
    std::vector<std::byte> copies;
    std::vector<segment> segments;
};

cut_message cut(const output_archive& ar) {
    cut_message m;
    ar.for_each_piece([&](const std::byte* p, std::size_t n) {
        if (n == 0) return;
        if (n >= segment_threshold) {
            m.segments.push_back({p, n, SIZE_MAX});
            return;
        }
        if (m.segments.empty() || m.segments.back().copy_at == SIZE_MAX)
            m.segments.push_back({nullptr, 0, m.copies.size()});
        m.copies.insert(m.copies.end(), p, p + n);
        m.segments.back().size += n;
    });
    for (auto& s : m.segments)
        if (s.copy_at != SIZE_MAX) s.data = m.copies.data() + s.copy_at;
    return m;
}

// The `pieces` header announcing `segments`, sent with `segment_tag`.
void write_header_for(const std::vector<segment>& segments, output_archive& header, int tag, int segment_tag) {
    std::vector<std::size_t> sizes;
    sizes.reserve(segments.size());
    for (const auto& s : segments) sizes.push_back(s.size);
    write_pieces_header(header, tag, segment_tag, sizes);
}

int take_segment_tag() noexcept {
    return first_segment_tag + static_cast<int>(next_segment_tag.fetch_add(1) % segment_tags);
}

void check_size(const output_archive& ar) {
    if (ar.size() > static_cast<std::size_t>(INT_MAX)) too_large(ar.size());
}

void send_contiguous(const void* data, std::size_t size, int dest, int tag, MPI_Comm comm) {
    check(MPI_Send(data, static_cast<int>(size), MPI_BYTE, dest, tag, comm), "MPI_Send");
}

}  // namespace

void send(const output_archive& ar, int dest, int tag, MPI_Comm comm) {
    check_size(ar);
    if (ar.borrowed_blocks().empty()) return send_contiguous(ar.buffer().data(), ar.size(), dest, tag, comm);
    const auto m = cut(ar);
    if (m.segments.size() == 1) return send_contiguous(m.segments[0].data, m.segments[0].size, dest, tag, comm);
    const int segment_tag = take_segment_tag();
    output_archive header;
    write_header_for(m.segments, header, tag, segment_tag);
    send_contiguous(header.buffer().data(), header.size(), dest, pieces, comm);
    for (const auto& s : m.segments) send_contiguous(s.data, s.size, dest, segment_tag, comm);
}

void send_queue::send(const output_archive& ar, int dest, int tag, MPI_Comm comm) {
    check_size(ar);
    const std::size_t size = ar.size();
    buffer b;
    b.copy = std::make_unique_for_overwrite<std::byte[]>(size == 0 ? 1 : size);
    ar.copy_to(b.copy.get());
    const std::byte* data = b.copy.get();
    start(std::move(b), data, size, dest, tag, comm);
}

std::shared_ptr<send_queue::in_place> send_queue::send_in_place(const output_archive& ar, int dest, int tag,
                                                                MPI_Comm comm) {
    check_size(ar);
    auto sent = std::make_shared<in_place>();
    auto in_place_buffer = [&] {
        buffer b;
        b.borrowed = sent;
        return b;
    };
    if (ar.borrowed_blocks().empty()) {
        start(in_place_buffer(), ar.buffer().data(), ar.size(), dest, tag, comm);
        return sent;
    }
    auto m = cut(ar);
    sent->copies_ = std::move(m.copies);  // the copied segments point into it (moving keeps them in place)
    if (m.segments.size() == 1) {
        start(in_place_buffer(), m.segments[0].data, m.segments[0].size, dest, tag, comm);
        return sent;
    }
    const int segment_tag = take_segment_tag();
    output_archive header;
    write_header_for(m.segments, header, tag, segment_tag);
    const std::size_t header_size = header.size();
    std::lock_guard lock(mutex_);  // one message's segments leave together
    try {
        buffer h = in_place_buffer();
        h.owned = header.take_buffer();
        const std::byte* at = h.owned.data();
        start_locked(std::move(h), at, header_size, dest, pieces, comm);
        for (const auto& s : m.segments) start_locked(in_place_buffer(), s.data, s.size, dest, segment_tag, comm);
    } catch (...) {
        // The segments already started complete (or are cancelled by drain):
        // wait() reports the failure once they no longer use the memory.
        sent->error_ = std::current_exception();
    }
    return sent;
}

void send_queue::wait(const in_place& sent) {
    while (!sent.done()) {
        progress();
        std::this_thread::yield();
    }
    if (sent.error_) std::rethrow_exception(sent.error_);
}

void send_queue::send_owned(std::vector<std::byte>&& bytes, std::size_t offset, std::size_t size, int dest, int tag,
                            MPI_Comm comm) {
    if (offset > bytes.size() || size > bytes.size() - offset)
        throw value_error("mp: send_queue::send_owned: the bytes to send lie outside the buffer");
    if (size > static_cast<std::size_t>(INT_MAX)) too_large(size);
    buffer b;
    b.owned = std::move(bytes);
    b.reusable = true;
    const std::byte* data = b.owned.data() + offset;
    start(std::move(b), data, size, dest, tag, comm);
}

void send_queue::start(buffer&& bytes, const std::byte* data, std::size_t size, int dest, int tag, MPI_Comm comm) {
    std::lock_guard lock(mutex_);
    start_locked(std::move(bytes), data, size, dest, tag, comm);
}

void send_queue::start_locked(buffer&& bytes, const std::byte* data, std::size_t size, int dest, int tag,
                              MPI_Comm comm) {
    requests_.reserve(requests_.size() + 1);
    buffers_.reserve(buffers_.size() + 1);
    MPI_Request request = MPI_REQUEST_NULL;
    check(MPI_Isend(data, static_cast<int>(size), MPI_BYTE, dest, tag, comm, &request), "MPI_Isend");
    if (bytes.borrowed) bytes.borrowed->pending_.fetch_add(1, std::memory_order_relaxed);
    requests_.push_back(request);
    buffers_.push_back(std::move(bytes));
    pending_.fetch_add(1, std::memory_order_release);
}

void send_queue::completed(buffer& b) noexcept {
    if (b.borrowed) b.borrowed->pending_.fetch_sub(1, std::memory_order_acq_rel);
    b.borrowed.reset();
}

std::vector<std::byte> send_queue::reusable() noexcept {
    std::lock_guard lock(mutex_);
    if (spares_.empty()) return {};
    auto b = std::move(spares_.back());
    spares_.pop_back();
    return b;
}

void send_queue::progress() noexcept {
    if (idle()) return;
    std::lock_guard lock(mutex_);
    std::vector<int> done(requests_.size());
    int count = 0;
    if (MPI_Testsome(static_cast<int>(requests_.size()), requests_.data(), &count, done.data(),
                     MPI_STATUSES_IGNORE) != MPI_SUCCESS ||
        count == MPI_UNDEFINED || count == 0)
        return;
    // Completed requests are MPI_REQUEST_NULL now: keep the others, in order.
    std::size_t kept = 0;
    for (std::size_t i = 0; i < requests_.size(); ++i) {
        if (requests_[i] == MPI_REQUEST_NULL) {
            auto& b = buffers_[i];
            if (b.reusable && b.owned.capacity() > 0 && spares_.size() < max_spares) {
                try {
                    spares_.push_back(std::move(b.owned));
                } catch (...) {  // out of memory: the buffer is freed instead
                }
            }
            completed(b);
            continue;
        }
        if (kept != i) {  // a vector moved onto itself would be emptied (and freed while MPI sends it)
            requests_[kept] = requests_[i];
            buffers_[kept] = std::move(buffers_[i]);
        }
        ++kept;
    }
    requests_.resize(kept);
    buffers_.resize(kept);
    pending_.store(kept, std::memory_order_release);
}

void send_queue::drain(std::chrono::milliseconds limit) noexcept {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!idle() && std::chrono::steady_clock::now() < until) {
        progress();
        std::this_thread::yield();
    }
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < requests_.size(); ++i) {
        auto& r = requests_[i];
        if (r != MPI_REQUEST_NULL) {
            MPI_Cancel(&r);
            MPI_Request_free(&r);
        }
        completed(buffers_[i]);
    }
    requests_.clear();
    buffers_.clear();
    pending_.store(0, std::memory_order_release);
}

namespace {

// Where `size` bytes are received: a pooled block for a large message.
std::byte* make_room(message& out, std::size_t size, block_pool* large) {
    out.size = size;
    if (large && size >= large_message_bytes) {
        out.bytes.reset();
        out.block = large->acquire(size);
        return out.block->data();
    }
    out.block.reset();
    out.bytes = std::make_unique_for_overwrite<std::byte[]>(size == 0 ? 1 : size);
    return out.bytes.get();
}

void receive_matched(message& out, MPI_Message& handle, const MPI_Status& status, MPI_Comm comm,
                     block_pool* large) {
    int count = 0;
    check(MPI_Get_count(&status, MPI_BYTE, &count), "MPI_Get_count");
    out.source = status.MPI_SOURCE;
    out.tag = status.MPI_TAG;
    // The small `pieces` header itself never goes into a block.
    std::byte* at_first = make_room(out, static_cast<std::size_t>(count), out.tag == pieces ? nullptr : large);
    check(MPI_Mrecv(at_first, count, MPI_BYTE, &handle, MPI_STATUS_IGNORE), "MPI_Mrecv");
    if (out.tag != pieces) return;
    // A split message (see send): its segments follow from the same sender,
    // in order, with their own tag; they land side by side in one buffer.
    const auto header = read_pieces_header(out.span());
    std::byte* whole = make_room(out, header.total, large);
    std::size_t at = 0;
    for (auto n : header.sizes) {
        check(MPI_Recv(whole + at, static_cast<int>(n), MPI_BYTE, out.source, header.segment_tag, comm,
                       MPI_STATUS_IGNORE),
              "MPI_Recv");
        at += n;
    }
    out.tag = header.tag;
}

}  // namespace

bool try_receive(message& out, int source, MPI_Comm comm, block_pool* large) {
    int flag = 0;
    MPI_Message handle = MPI_MESSAGE_NULL;
    MPI_Status status;
    check(MPI_Improbe(source, MPI_ANY_TAG, comm, &flag, &handle, &status), "MPI_Improbe");
    if (!flag) return false;
    receive_matched(out, handle, status, comm, large);
    return true;
}

message receive(int source, int tag, MPI_Comm comm) {
    message out;
    MPI_Message handle = MPI_MESSAGE_NULL;
    MPI_Status status;
    check(MPI_Mprobe(source, tag, comm, &handle, &status), "MPI_Mprobe");
    receive_matched(out, handle, status, comm, nullptr);
    return out;
}

// ---- build-ids ---------------------------------------------------------------

namespace {

std::string hex(const unsigned char* p, std::size_t n) {
    static const char digits[] = "0123456789abcdef";
    std::string s;
    s.reserve(2 * n);
    for (std::size_t i = 0; i < n; ++i) {
        s += digits[p[i] >> 4];
        s += digits[p[i] & 15];
    }
    return s;
}

// The NT_GNU_BUILD_ID note of one loaded module, read from its PT_NOTE
// segments in memory (the linker's --build-id, on by default on Debian).
std::string build_id_of(const dl_phdr_info* info) {
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const auto& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_NOTE) continue;
        const auto* p = reinterpret_cast<const unsigned char*>(info->dlpi_addr + ph.p_vaddr);
        const auto* end = p + ph.p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            ElfW(Nhdr) note;
            std::memcpy(&note, p, sizeof note);
            const unsigned char* name = p + sizeof note;
            const unsigned char* desc = name + ((note.n_namesz + 3) & ~3u);
            const unsigned char* next = desc + ((note.n_descsz + 3) & ~3u);
            if (next > end) break;
            if (note.n_type == NT_GNU_BUILD_ID && note.n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0)
                return hex(desc, note.n_descsz);
            p = next;
        }
    }
    return {};
}

std::string base_name(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

std::vector<module_build_id> loaded_build_ids() {
    std::vector<module_build_id> out;
    dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* data) {
            auto* list = static_cast<std::vector<module_build_id>*>(data);
            // The first entry is the main program, named "" as in a code_ref.
            std::string path = list->empty() ? std::string() : std::string(info->dlpi_name ? info->dlpi_name : "");
            list->push_back({std::move(path), build_id_of(info)});
            return 0;
        },
        &out);
    return out;
}

std::string host_name() {
    char name[MPI_MAX_PROCESSOR_NAME] = {};
    int len = 0;
    if (MPI_Get_processor_name(name, &len) != MPI_SUCCESS) return "?";
    return std::string(name, static_cast<std::size_t>(len));
}

hello_report make_hello(int rank) {
    hello_report h{rank, host_name(), loaded_build_ids()};
    // Test hook: pretend this rank runs another build of the program.
    if (const char* fake = std::getenv("MP_MPI_TEST_FAKE_BUILD_ID"); fake && std::atoi(fake) == rank && rank != 0 &&
                                                                       !h.modules.empty()) {
        auto& id = h.modules.front().build_id;
        if (id.empty()) id.push_back('0');
        id[0] = id[0] == 'f' ? '0' : 'f';
    }
    return h;
}

std::string compare_builds(const hello_report& boss, const hello_report& worker) {
    auto describe = [&](const std::string& what, const std::string& mine, const std::string& theirs) {
        return "mp: MPI rank " + std::to_string(worker.rank) + " on host " + worker.host + " runs another build of " +
               what + ": its GNU build-id is " + (theirs.empty() ? "(none)" : theirs) + ", rank 0's (host " +
               boss.host + ") is " + (mine.empty() ? "(none)" : mine) +
               ". Every rank must run the same executable and libraries: install the same build on every host "
               "(functions travel as offsets inside them)";
    };
    if (boss.modules.empty() || worker.modules.empty()) return describe("the executable", "?", "?");
    const auto& mine = boss.modules.front().build_id;
    const auto& theirs = worker.modules.front().build_id;
    if (mine != theirs) return describe("the executable", mine, theirs);
    // Libraries are matched by file name (a path may differ between hosts);
    // a library loaded on one side only is not used by a task the other
    // side can run, so only the ones both have are compared.
    for (std::size_t i = 1; i < boss.modules.size(); ++i) {
        const auto& m = boss.modules[i];
        if (m.build_id.empty() || m.path.empty()) continue;
        const std::string name = base_name(m.path);
        for (std::size_t j = 1; j < worker.modules.size(); ++j) {
            const auto& w = worker.modules[j];
            if (base_name(w.path) != name || w.build_id.empty()) continue;
            if (w.build_id != m.build_id) return describe("the library " + name, m.build_id, w.build_id);
        }
    }
    return {};
}

}  // namespace mp::detail::mpi_wire
