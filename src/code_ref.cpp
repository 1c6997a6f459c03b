// Code references: turning a function into (module, build-id, offset) and
// back, with the checks that keep an altered message from choosing where a
// process jumps. See mp/detail/code_ref.hpp for the rules.
#include "mp/detail/code_ref.hpp"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <link.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "sys/sys.hpp"

namespace mp::detail {
namespace {

// ---- the registry of entry points ------------------------------------------
//
// Registrations arrive at static initialisation (and when a library is
// loaded), lookups on every decoded code_ref. Both are lock-free: a
// registration pushes a node on a list; a lookup binary-searches a sorted
// snapshot of the list and rebuilds the snapshot only when the list has grown
// since. No lock means nothing a fork child could inherit held.

struct registration {
    std::uintptr_t address;
    const registration* next;
};
std::atomic<const registration*> registrations{nullptr};
std::atomic<std::size_t> registration_count{0};

struct registry_snapshot {
    std::vector<std::uintptr_t> sorted;
    std::size_t covers = 0;                      // how many registrations it holds
    const registry_snapshot* previous = nullptr;  // kept: a reader may still hold it
};
std::atomic<const registry_snapshot*> snapshot{nullptr};

const registry_snapshot* current_snapshot() {
    const registry_snapshot* s = snapshot.load(std::memory_order_acquire);
    std::size_t count = registration_count.load(std::memory_order_acquire);
    if (s && s->covers == count) return s;
    auto fresh = std::make_unique<registry_snapshot>();
    for (const registration* r = registrations.load(std::memory_order_acquire); r; r = r->next) {
        fresh->sorted.push_back(r->address);
        ++fresh->covers;
    }
    std::sort(fresh->sorted.begin(), fresh->sorted.end());
    fresh->previous = s;
    if (snapshot.compare_exchange_strong(s, fresh.get(), std::memory_order_acq_rel)) return fresh.release();
    return s;  // another thread published one meanwhile
}

bool is_registered(std::uintptr_t address) {
    const auto& v = current_snapshot()->sorted;
    return std::binary_search(v.begin(), v.end(), address);
}

// ---- the module table ------------------------------------------------------

struct module_record {
    std::string name;  // dlpi_name: "" for the main executable
    std::string path;  // the file to read its symbols from
    std::uintptr_t base = 0;
    std::uintptr_t low = ~std::uintptr_t{0}, high = 0;  // bounds of its PT_LOAD segments
    std::uint64_t build = 0;  // see code_ref::build
    // Offsets of its functions (from its symbol table), read on first need.
    mutable std::atomic<const std::vector<std::uint64_t>*> functions{nullptr};
};

// How many objects the dynamic loader has loaded and unloaded so far: equal
// counts mean an unchanged list of modules.
using loader_generation = std::pair<unsigned long long, unsigned long long>;

loader_generation read_generation(const dl_phdr_info* info) { return {info->dlpi_adds, info->dlpi_subs}; }

loader_generation current_generation() {
    loader_generation g{};
    dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* out) {
            *static_cast<loader_generation*>(out) = read_generation(info);
            return 1;  // every entry carries the same counts
        },
        &g);
    return g;
}

struct module_table {
    int pid = 0;  // the process that walked the loader's list for it
    loader_generation generation{};  // of the loader's list it was built from
    std::vector<std::unique_ptr<module_record>> modules;  // [0]: the main executable
    const module_table* previous = nullptr;  // never freed: a reader may still hold it
};
std::atomic<const module_table*> table{nullptr};

std::uint64_t fnv1a(const unsigned char* p, std::size_t n) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

std::uint64_t read_build_id(const dl_phdr_info* info) {
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const auto& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_NOTE) continue;
        const auto* at = reinterpret_cast<const unsigned char*>(info->dlpi_addr + ph.p_vaddr);
        const auto* end = at + ph.p_memsz;
        while (at + sizeof(ElfW(Nhdr)) <= end) {
            ElfW(Nhdr) note;
            std::memcpy(&note, at, sizeof note);
            const unsigned char* name = at + sizeof note;
            const unsigned char* desc = name + ((note.n_namesz + 3) & ~3u);
            const unsigned char* next = desc + ((note.n_descsz + 3) & ~3u);
            if (next > end) break;
            if (note.n_type == NT_GNU_BUILD_ID && note.n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0)
                return fnv1a(desc, note.n_descsz);
            at = next;
        }
    }
    return 0;
}

int add_module(dl_phdr_info* info, std::size_t, void* data) {
    auto* t = static_cast<module_table*>(data);
    t->generation = read_generation(info);
    auto m = std::make_unique<module_record>();
    m->name = info->dlpi_name ? info->dlpi_name : "";
    m->path = t->modules.empty() ? "/proc/self/exe" : m->name;
    m->base = info->dlpi_addr;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const auto& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD) continue;
        std::uintptr_t start = info->dlpi_addr + ph.p_vaddr;
        m->low = std::min(m->low, start);
        m->high = std::max(m->high, start + ph.p_memsz);
    }
    m->build = read_build_id(info);
    t->modules.push_back(std::move(m));
    return 0;
}

// Walks the loader's list (taking its lock) and publishes a new table.
const module_table* refresh_table(const module_table* old) {
    auto fresh = std::make_unique<module_table>();
    fresh->pid = sys::current_pid();
    dl_iterate_phdr(add_module, fresh.get());
    if (old)  // keep the symbol tables already read
        for (auto& m : fresh->modules)
            for (const auto& o : old->modules)
                if (o->name == m->name && o->base == m->base)
                    m->functions.store(o->functions.load(std::memory_order_acquire), std::memory_order_relaxed);
    fresh->previous = old;
    if (table.compare_exchange_strong(old, fresh.get(), std::memory_order_acq_rel)) return fresh.release();
    return old;
}

const module_table* current_table() {
    const module_table* t = table.load(std::memory_order_acquire);
    return t ? t : refresh_table(nullptr);
}

// A refresh walks the loader's list under its lock. In a fork child that lock
// may have been held by another thread of the parent at the fork, and is then
// held for ever: only the process that built the table refreshes it; a fork
// child makes do with what it inherited (everything loaded before the fork).
//
// Nothing loaded or unloaded since `t` was built: a new table would be the
// same, and tables are never freed, so none is made (a peer sending
// references to modules that do not exist made one per message).
const module_table* refreshed_if_safe(const module_table* t) {
    if (t->pid != sys::current_pid()) return nullptr;
    if (current_generation() == t->generation) return nullptr;
    return refresh_table(t);
}

// Built before main, while the program has one thread.
[[maybe_unused]] const bool table_built_at_start = (current_table(), true);

const module_record* containing(const module_table* t, std::uintptr_t a) {
    for (const auto& m : t->modules)
        if (a >= m->low && a < m->high) return m.get();
    return nullptr;
}

const module_record* named(const module_table* t, const std::string& name) {
    for (const auto& m : t->modules)
        if (m->name == name) return m.get();
    return nullptr;
}

// ---- function symbols ------------------------------------------------------

template <class T>
const T* at(const sys::mapped_file& f, std::uint64_t offset, std::uint64_t count = 1) {
    if (offset > f.size() || count > (f.size() - offset) / sizeof(T)) return nullptr;
    return reinterpret_cast<const T*>(f.data() + offset);
}

// The offsets of the functions defined in an ELF file: from .symtab, which
// names static functions too, else from .dynsym (a stripped file).
std::vector<std::uint64_t> function_offsets(const std::string& path) {
    std::vector<std::uint64_t> out;
    std::optional<sys::mapped_file> file;
    try {
        file.emplace(sys::map_file_readonly(path.c_str()));
    } catch (const mp::error&) {
        return out;  // no file to read (the vDSO, a deleted library): no plain functions from it
    }
    const sys::mapped_file& f = *file;
    const auto* eh = at<ElfW(Ehdr)>(f, 0);
    if (!eh || std::memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_shentsize != sizeof(ElfW(Shdr))) return out;
    const auto* sections = at<ElfW(Shdr)>(f, eh->e_shoff, eh->e_shnum);
    if (!sections) return out;
    for (unsigned wanted : {SHT_SYMTAB, SHT_DYNSYM}) {
        for (unsigned i = 0; i < eh->e_shnum; ++i) {
            const auto& sh = sections[i];
            if (sh.sh_type != wanted || sh.sh_entsize != sizeof(ElfW(Sym))) continue;
            std::uint64_t n = sh.sh_size / sizeof(ElfW(Sym));
            const auto* syms = at<ElfW(Sym)>(f, sh.sh_offset, n);
            if (!syms) continue;
            for (std::uint64_t k = 0; k < n; ++k) {
                unsigned type = ELF64_ST_TYPE(syms[k].st_info);
                if ((type == STT_FUNC || type == STT_GNU_IFUNC) && syms[k].st_shndx != SHN_UNDEF && syms[k].st_value)
                    out.push_back(syms[k].st_value);
            }
        }
        if (!out.empty()) break;
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

bool starts_a_function(const module_record& m, std::uint64_t offset) {
    const auto* fns = m.functions.load(std::memory_order_acquire);
    if (!fns) {
        auto fresh = std::make_unique<const std::vector<std::uint64_t>>(function_offsets(m.path));
        const std::vector<std::uint64_t>* expected = nullptr;
        if (m.functions.compare_exchange_strong(expected, fresh.get(), std::memory_order_acq_rel))
            fns = fresh.release();
        else
            fns = expected;
    }
    return std::binary_search(fns->begin(), fns->end(), offset);
}

std::string hex(std::uint64_t build) {
    if (build == 0) return "none";
    static const char digits[] = "0123456789abcdef";
    std::string s;
    for (int shift = 60; shift >= 0; shift -= 4) s += digits[(build >> shift) & 15];
    return s;
}

std::string describe(const code_ref& ref) {
    return "offset " + std::to_string(ref.offset) + " in " +
           (ref.module.empty() ? std::string("the main executable") : "'" + ref.module + "'");
}

const void* resolve(const code_ref& ref, bool any_function) {
    const module_table* t = current_table();
    const module_record* m = named(t, ref.module);
    if (!m)
        if (const module_table* r = refreshed_if_safe(t)) m = named(r, ref.module);
    if (!m)
        throw serialization_error("mp: received a function from module '" + ref.module +
                                  "', which is not loaded in this process");
    if (m->build != ref.build)
        throw serialization_error("mp: received a function from another build of " +
                                  (ref.module.empty() ? std::string("this program") : "'" + ref.module + "'") +
                                  " (build-id hash " + hex(ref.build) + ", here " + hex(m->build) +
                                  "): processes exchanging functions must run the same executable");
    if (ref.offset >= m->high - m->base)
        throw serialization_error("mp: corrupt message: a function reference (" + describe(ref) +
                                  ") points outside its module");
    std::uintptr_t address = m->base + static_cast<std::uintptr_t>(ref.offset);
    if (is_registered(address)) return reinterpret_cast<const void*>(address);
    if (any_function && starts_a_function(*m, ref.offset)) return reinterpret_cast<const void*>(address);
    throw serialization_error("mp: refused a message: its function reference (" + describe(ref) + ") is not " +
                              (any_function ? "the start of a function" : "an entry point mp registered") +
                              "; the message was altered or corrupted");
}

}  // namespace

void register_sendable(const void* address) noexcept {
    // Nodes are never freed: a registration lives as long as the program.
    auto* node = new (std::nothrow) registration{reinterpret_cast<std::uintptr_t>(address), nullptr};
    if (!node) return;
    const registration* head = registrations.load(std::memory_order_relaxed);
    do {
        node->next = head;
    } while (!registrations.compare_exchange_weak(head, node, std::memory_order_release, std::memory_order_relaxed));
    registration_count.fetch_add(1, std::memory_order_release);
}

code_ref make_code_ref(const void* address) {
    auto a = reinterpret_cast<std::uintptr_t>(address);
    const module_table* t = current_table();
    const module_record* m = containing(t, a);
    if (!m)
        if (const module_table* r = refreshed_if_safe(t)) m = containing(r, a);
    if (!m) throw serialization_error("mp: cannot send a function that lives outside every loaded module");
    return {m->name, m->build, a - m->base};
}

const void* resolve_entry(const code_ref& ref) { return resolve(ref, false); }

const void* resolve_code_ref(const code_ref& ref) { return resolve(ref, true); }

std::string function_name(const void* address) {
    Dl_info info{};
    if (!dladdr(address, &info) || !info.dli_sname) return {};
    int status = 0;
    char* d = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    std::string name = (status == 0 && d) ? d : info.dli_sname;
    std::free(d);
    // "ns::mul(int, int)" -> "mul"
    if (auto paren = name.find('('); paren != std::string::npos) name.resize(paren);
    if (auto colon = name.rfind("::"); colon != std::string::npos) name.erase(0, colon + 2);
    return name;
}

}  // namespace mp::detail
