// mp/detail/code_ref.hpp — a function's address, in a form another process
// running the same program can turn back into that function.
//
// A spawn or forkserver child is a fresh run of the same executable, loaded at
// another address: a function is sent as (module, a hash of its GNU build-id,
// offset in module). Only processes of one program exchange code_refs (process
// bootstrap, pool tasks, pipes and queues); managers, which may talk to other
// programs, send names, never code: their archives are data-only and refuse
// a code_ref.
//
// A code_ref from a message is checked before it becomes a pointer: the
// module must be loaded here with the same build-id, and the offset must be
// the start of a function mp knows may be called this way:
// - an entry point (task, process and manager entries, mp::fn, lambdas in
//   mp::function) registers itself at static initialisation through
//   sendable<&f>(), so every process of the program, whatever its start
//   method, knows the same set; resolve_as accepts only these;
// - a plain function pointer the user passes (pool.map(&f, xs)) is accepted
//   by resolve_function_as when the offset starts a function in the module's
//   symbol table (.symtab, else .dynsym).
// Anything else is mp::serialization_error. Resolving never takes the dynamic
// loader's locks in a fork child (its parent's other threads may have held
// them when it forked): the module table is captured before, at static
// initialisation, and refreshed only in the process that built it.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include "mp/detail/archive.hpp"
#include "mp/error.hpp"

namespace mp::detail {

struct code_ref {
    std::string module;      // "" for the main executable
    std::uint64_t build = 0;  // FNV-1a of the module's GNU build-id (0: it has none); fixed-size, so
                              // a code_ref costs no allocation to send or receive
    std::uint64_t offset = 0;

    template <class Archive>
    void save(Archive& ar) const {
        ar(module, build, offset);
    }
    template <class Archive>
    void load(Archive& ar) {
        if constexpr (std::is_same_v<Archive, input_archive>)
            if (ar.data_only())
                throw serialization_error(
                    "mp: refused a message: it contains a function (a code reference), and this channel "
                    "carries data only (a manager's requests and replies name methods, they never carry code)");
        ar(module, build, offset);
    }
};

code_ref make_code_ref(const void* address);
/// An entry point registered with sendable<>(); throws mp::serialization_error
/// for anything else (another build, an unknown module, an unregistered offset).
const void* resolve_entry(const code_ref& ref);
/// A registered entry point or the start of any function in the module's
/// symbol table (for plain function pointers a user sends).
const void* resolve_code_ref(const code_ref& ref);
/// The demangled name of the function at `address`, without its parameter
/// list ("mul"), or "" when the symbol is not exported.
std::string function_name(const void* address);

/// Records `address` as callable through a code_ref; runs at static
/// initialisation (see sendable_entry), lock-free.
void register_sendable(const void* address) noexcept;

template <auto F>
struct sendable_entry {
    static inline const bool registered = (register_sendable(reinterpret_cast<const void*>(F)), true);
};

/// F itself, registered in every process of this program as an entry point a
/// code_ref may name: `t.entry = sendable<&process_entry<F>>();`.
template <auto F>
auto sendable() noexcept {
    (void)sendable_entry<F>::registered;  // odr-use: instantiates the registration
    return F;
}

template <class Fp>
code_ref code_ref_of(Fp f) {
    return make_code_ref(reinterpret_cast<const void*>(f));
}

/// For entry points only (registered with sendable<>()).
template <class Fp>
Fp resolve_as(const code_ref& ref) {
    return reinterpret_cast<Fp>(const_cast<void*>(resolve_entry(ref)));
}

/// For functions a user passed as plain pointers.
template <class Fp>
Fp resolve_function_as(const code_ref& ref) {
    return reinterpret_cast<Fp>(const_cast<void*>(resolve_code_ref(ref)));
}

}  // namespace mp::detail
