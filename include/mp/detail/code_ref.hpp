// mp/detail/code_ref.hpp — a function's address, in a form another process
// running the same program can turn back into that function.
//
// A spawn or forkserver child is a fresh run of the same executable, loaded at
// another address: a function is sent as (module, offset in module). Only
// processes of one program exchange code_refs (process bootstrap, pool tasks);
// managers, which may talk to other programs, send names, never code.
#pragma once

#include <cstdint>
#include <string>

namespace mp::detail {

struct code_ref {
    std::string module;  // "" for the main executable
    std::uint64_t offset = 0;

    template <class Archive>
    void serialize(Archive& ar) {
        ar(module, offset);
    }
};

code_ref make_code_ref(const void* address);
/// Throws mp::serialization_error when the module is not loaded here.
const void* resolve_code_ref(const code_ref& ref);
/// The demangled name of the function at `address`, without its parameter
/// list ("mul"), or "" when the symbol is not exported.
std::string function_name(const void* address);

template <class Fp>
code_ref code_ref_of(Fp f) {
    return make_code_ref(reinterpret_cast<const void*>(f));
}

template <class Fp>
Fp resolve_as(const code_ref& ref) {
    return reinterpret_cast<Fp>(const_cast<void*>(resolve_code_ref(ref)));
}

}  // namespace mp::detail
