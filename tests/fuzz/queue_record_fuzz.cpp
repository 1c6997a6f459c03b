// fuzz_queue_record — the record reader of mp::queue (src/queue.cpp) over
// shared memory that the fuzz bytes wrote.
//
// A queue is a byte ring in a memfd that every process holding the queue
// maps read/write: a consumer reads records other processes wrote. This
// target writes the fuzz bytes as the records waiting between the ring's
// tail and head, then gets items (mp::queue<T>::try_get, the real reader,
// decoding with the real archive) until the queue is empty. A get must
// return an item or throw mp::serialization_error, read only bytes a
// producer published (between tail and head), and never move the tail past
// the head.
//
// Input: [u8 mode][u32 where][u16 published][records...]
//   mode & 1: the records start `where % 64 KiB` bytes before the end of
//             the ring (exercises the wrap record); else `where % 4 MiB`
//             bytes after its start.
//   mode & 2: head = tail + `published` (a producer that published fewer or
//             more bytes than it wrote); else the head is right after the
//             records.
//   (mode >> 2) & 1: which item type the consumer reads.
//   mode & 8: the first record is a large item its producer is still
//             writing (large_from names it, `published` * 64 of its payload
//             bytes written): a consumer of strings copies it in pieces.
//
// The shared header's layout is queue.cpp's `struct queue_core::shared`; it
// is checked against a real put and get at start-up, so a change of layout
// stops this target with a message instead of fuzzing the wrong bytes.
#include <atomic>
#include <cstddef>
#include <cstring>
#include <map>
#include <variant>

#include "fuzz_support.hpp"
#include "mp/queue.hpp"
#include "queue/layout.hpp"
#include "sys/sys.hpp"

namespace {

using mp::detail::queue_layout::capacity;
using mp::detail::queue_layout::header_size;
using mp::detail::queue_layout::forward;

// Where the ends of the queue lie in its shared header (src/queue/layout.hpp).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winvalid-offsetof"
using shared_header = mp::detail::queue_core::shared;
constexpr std::size_t head_offset = offsetof(shared_header, head), tail_seen_offset = offsetof(shared_header, tail_seen),
                      released_offset = offsetof(shared_header, released_to),
                      tail_offset = offsetof(shared_header, tail), head_seen_offset = offsetof(shared_header, head_seen),
                      dropped_offset = offsetof(shared_header, dropped),
                      drop_word_offset = offsetof(shared_header, drop_word),
                      large_from_offset = offsetof(shared_header, large_from),
                      large_written_offset = offsetof(shared_header, large_written);
#pragma GCC diagnostic pop

// The head and the tail are end words: a position and an item count.
std::uint64_t end_word(std::uint64_t pos, std::uint64_t count) {
    return mp::detail::queue_layout::end_word{pos, count}.word();
}
std::uint64_t pos_of(std::uint64_t word) { return mp::detail::queue_layout::end_word::from(word).pos; }
std::uint64_t count_of(std::uint64_t word) { return mp::detail::queue_layout::end_word::from(word).count; }

using item_a = std::string;
using item_b = std::variant<std::int64_t, std::vector<double>, std::map<std::string, std::string>>;

struct ring {
    mp::queue<item_a> qa;
    mp::queue<item_b> qb;  // the same memfd as qa, read as another type
    std::byte* base = nullptr;

    std::atomic<std::uint64_t>& at(std::size_t offset) const {
        return *reinterpret_cast<std::atomic<std::uint64_t>*>(base + offset);
    }
    std::byte* data() const { return base + header_size; }
};

ring* the_ring = nullptr;

template <class T>
mp::queue<T> same_memfd(const mp::queue<item_a>& q) {
    mp::detail::output_archive out;
    mp::detail::save_value(out, q);
    std::vector<mp::detail::unique_fd> fds;
    fds.push_back(mp::sys::dup_cloexec(out.fds().at(0)));
    auto bytes = mp_fuzz::flatten(out);
    mp::detail::input_archive in(bytes, &fds);
    return mp::detail::load_value<mp::queue<T>>(in);
}

void check_layout(ring& r) {
    r.qa.put(std::string("layout"));
    // One record of a header and a few bytes (the string as plain bytes or
    // with its length, whichever the archive uses), counted once.
    std::uint64_t head = r.at(head_offset).load(), tail = r.at(tail_offset).load();
    bool ok = pos_of(tail) == 0 && count_of(head) == count_of(tail) + 1 && pos_of(head) > 16 &&
              pos_of(head) <= 64 && pos_of(head) % 16 == 0;
    ok = ok && r.qa.try_get() == std::optional<std::string>("layout");
    ok = ok && r.at(tail_offset).load() == head;
    ok = ok && r.at(dropped_offset).load() == 0;
    if (!ok)
        mp_fuzz::fail("the queue's shared header is not laid out as queue_record_fuzz.cpp expects "
                      "(struct queue_core::shared changed): update the offsets at the top of this file");
}

template <class T>
void drain(mp::queue<T>& q, ring& r) {
    for (int i = 0; i < 16; ++i) {
        std::uint64_t tail = pos_of(r.at(tail_offset).load()), head = pos_of(r.at(head_offset).load());
        if (tail == head) return;
        mp_fuzz::decoded([&] { (void)q.try_get(); });
        std::uint64_t new_tail = pos_of(r.at(tail_offset).load()), new_head = pos_of(r.at(head_offset).load());
        // Only a reader runs here: the head stays, and the tail moves at
        // most up to it.
        if (new_head == head && forward(tail, new_tail) > forward(tail, head))
            mp_fuzz::fail("the queue's reader moved its tail past the head: it took a record that runs past "
                          "what producers published (src/queue.cpp, queue_core::get)");
    }
}

}  // namespace

namespace mp_fuzz {

void set_up() {
    auto* r = new ring;  // lives as long as the process: one 8 GiB sparse memfd, not one per input
    r->qb = same_memfd<item_b>(r->qa);
    mp::detail::output_archive out;
    mp::detail::save_value(out, r->qa);
    r->base = static_cast<std::byte*>(mp::sys::map_shared(out.fds().at(0), header_size + capacity, 0, true));
    check_layout(*r);
    the_ring = r;
}

}  // namespace mp_fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 7) return 0;
    ring& r = *the_ring;
    std::uint8_t mode = data[0];
    std::uint32_t where;
    std::uint16_t published;
    std::memcpy(&where, data + 1, 4);
    std::memcpy(&published, data + 5, 2);
    auto records = mp_fuzz::as_bytes(data + 7, size - 7);

    // Records start 16-byte aligned, as every position a producer writes.
    std::uint64_t phys = (mode & 1) ? capacity - (((where % 65536) + 16) & ~std::uint64_t{15})
                                    : (where % (4u << 20)) & ~std::uint64_t{15};
    std::uint64_t pos = capacity + phys;  // the second lap: positions only grow
    std::size_t fits = std::min<std::size_t>(records.size(), capacity - phys);
    std::memcpy(r.data() + phys, records.data(), fits);
    std::uint64_t head = pos + ((mode & 2) ? published : ((records.size() + 15) & ~std::size_t{15}));

    // A thousand items claimed published; the reader's cached head is the
    // tail, so it reads the head first.
    r.at(tail_offset).store(end_word(pos, 0));
    r.at(head_seen_offset).store(end_word(pos, 0));
    r.at(tail_seen_offset).store(pos);
    r.at(released_offset).store(pos);
    r.at(head_offset).store(end_word(head, 1000));
    r.at(dropped_offset).store(0);
    r.at(drop_word_offset).store(0);
    r.at(large_written_offset).store(std::uint64_t{published} * 64);
    r.at(large_from_offset).store((mode & 8) ? end_word(pos, 0) : ~std::uint64_t{0});
    if ((mode >> 2) & 1)
        drain(r.qb, r);
    else
        drain(r.qa, r);
    // The next input starts from a clean ring: give the written pages back.
    std::memset(r.data() + phys, 0, fits);
    return 0;
}

namespace mp_fuzz {

void write_seeds() {
    // The records a real producer writes: put items into a fresh queue and
    // copy what lies between its tail and head.
    auto seed = [](const char* name, std::uint8_t mode, auto&& fill) {
        mp::queue<item_b> q;
        fill(q);
        mp::detail::output_archive out;
        mp::detail::save_value(out, q);
        auto* base =
            static_cast<std::byte*>(mp::sys::map_shared(out.fds().at(0), header_size + capacity, 0, true));
        auto head = pos_of(reinterpret_cast<std::atomic<std::uint64_t>*>(base + head_offset)->load());
        std::vector<std::byte> s(7 + head);
        s[0] = static_cast<std::byte>(mode);
        std::memcpy(s.data() + 7, base + header_size, head);
        mp::sys::unmap(base, header_size + capacity);
        mp_fuzz::write_seed(name, s);
    };
    seed("one-int", 4, [](auto& q) { q.put(item_b(std::int64_t{42})); });
    seed("three", 4, [](auto& q) {
        q.put(item_b(std::vector<double>{1.5, 2.5}));
        q.put(item_b(std::map<std::string, std::string>{{"k", "v"}}));
        q.put(item_b(std::int64_t{-1}));
    });
    seed("near-end", 5, [](auto& q) { q.put(item_b(std::vector<double>{3.0})); });
    mp::queue<item_a> qa;
    qa.put(std::string("a string item"));
    mp::detail::output_archive out;
    mp::detail::save_value(out, qa);
    auto* base = static_cast<std::byte*>(mp::sys::map_shared(out.fds().at(0), header_size + capacity, 0, true));
    auto head = pos_of(reinterpret_cast<std::atomic<std::uint64_t>*>(base + head_offset)->load());
    std::vector<std::byte> s(7 + head);
    std::memcpy(s.data() + 7, base + header_size, head);
    mp::sys::unmap(base, header_size + capacity);
    mp_fuzz::write_seed("string", s);
    // The same string still being written as a large item: not stamped yet,
    // 64 of its bytes announced (published = 1).
    s[0] = static_cast<std::byte>(8);
    s[5] = static_cast<std::byte>(1);
    std::memset(s.data() + 7 + 8, 0, 8);
    mp_fuzz::write_seed("string-being-written", s);
}

}  // namespace mp_fuzz
