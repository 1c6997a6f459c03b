// fuzz_code_ref — code references received from another process of the same
// program (src/code_ref.cpp): a task's entry, an mp::function, a manager
// type entry's trampoline (the start-up arguments of a server process).
//
// resolve_code_ref turns (module, offset) into an address that the
// receiver will call. Whatever the bytes, it must either throw
// mp::serialization_error or give an address inside executable code of a
// module loaded here; nothing here calls it.
//
// Input: [u8 what: 0 code_ref, 1 mp::function<int(int)>, 2 mgr::type_entry][bytes].
#include <dlfcn.h>
#include <link.h>

#include "fuzz_support.hpp"
#include "mp/function.hpp"
#include "mp/manager.hpp"

namespace {

namespace d = mp::detail;

int twice(int x) { return static_cast<int>(2u * static_cast<unsigned>(x)); }

struct looking_for {
    std::uintptr_t address;
    bool executable = false;
};

// True if `p` lies in an executable segment of a loaded module.
bool in_code(const void* p) {
    looking_for l{reinterpret_cast<std::uintptr_t>(p)};
    dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* data) {
            auto* l = static_cast<looking_for*>(data);
            for (int i = 0; i < info->dlpi_phnum; ++i) {
                const auto& ph = info->dlpi_phdr[i];
                if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
                std::uintptr_t start = info->dlpi_addr + ph.p_vaddr;
                if (l->address >= start && l->address < start + ph.p_memsz) {
                    l->executable = true;
                    return 1;
                }
            }
            return 0;
        },
        &l);
    return l.executable;
}

void check_resolved(const void* p) {
    if (!in_code(p))
        mp_fuzz::fail("a code_ref resolved to an address outside every module's code: a receiver would "
                      "call it (src/code_ref.cpp, resolve_code_ref)");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    auto body = mp_fuzz::as_bytes(data + 1, size - 1);
    d::input_archive in(body);
    switch (data[0] % 3) {
        case 0: {
            d::code_ref ref;
            if (!mp_fuzz::decoded([&] { ref = d::load_value<d::code_ref>(in); })) return 0;
            const void* p = nullptr;
            if (!mp_fuzz::decoded([&] { p = d::resolve_code_ref(ref); })) return 0;
            check_resolved(p);
            break;
        }
        case 1: {
            // mp::function keeps its pointer private: the code_ref it holds is
            // read again from the same bytes (present flag, then the ref).
            mp::function<int(int)> f;
            if (!mp_fuzz::decoded([&] { f = d::load_value<mp::function<int(int)>>(in); }) || !f) return 0;
            d::input_archive again(body);
            bool present = false;
            d::code_ref ref;
            again(present, ref);
            check_resolved(d::resolve_code_ref(ref));
            break;
        }
        case 2: {
            mp::detail::mgr::type_entry e;
            if (!mp_fuzz::decoded([&] { e = d::load_value<mp::detail::mgr::type_entry>(in); })) return 0;
            check_resolved(reinterpret_cast<const void*>(e.trampoline));
            break;
        }
    }
    return 0;
}

namespace mp_fuzz {

void write_seeds() {
    mp_fuzz::write_seed("code_ref", mp_fuzz::prefixed({0}, mp_fuzz::encode(d::code_ref_of(&twice))));
    mp_fuzz::write_seed("function", mp_fuzz::prefixed({1}, mp_fuzz::encode(mp::function<int(int)>(&twice))));
    mp::detail::mgr::type_entry e;
    e.name = "twice";
    e.trampoline = reinterpret_cast<mp::detail::mgr::trampoline_fn>(&twice);
    mp_fuzz::write_seed("type_entry", mp_fuzz::prefixed({2}, mp_fuzz::encode(e)));
    // A module other than the executable: the C library, by the name the
    // dynamic loader gives it here.
    Dl_info info{};
    if (dladdr(reinterpret_cast<const void*>(&::abort), &info) && info.dli_fname)
        mp_fuzz::write_seed("code_ref-libc",
                            mp_fuzz::prefixed({0}, mp_fuzz::encode(d::code_ref{
                                                       info.dli_fname, reinterpret_cast<std::uintptr_t>(&::abort) -
                                                                           reinterpret_cast<std::uintptr_t>(info.dli_fbase)})));
}

}  // namespace mp_fuzz
