#include "mp/detail/code_ref.hpp"

#include <cxxabi.h>
#include <dlfcn.h>
#include <link.h>

#include <cstdlib>
#include <cstring>

#include "mp/error.hpp"

namespace mp::detail {
namespace {

struct module_hit {
    std::uintptr_t address;
    std::string name;
    std::uintptr_t base = 0;
    bool found = false;
};

int find_containing(dl_phdr_info* info, std::size_t, void* data) {
    auto* hit = static_cast<module_hit*>(data);
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const auto& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD) continue;
        std::uintptr_t start = info->dlpi_addr + ph.p_vaddr;
        if (hit->address >= start && hit->address < start + ph.p_memsz) {
            hit->name = info->dlpi_name ? info->dlpi_name : "";
            hit->base = info->dlpi_addr;
            hit->found = true;
            return 1;
        }
    }
    return 0;
}

struct module_lookup {
    const std::string* name;
    std::uintptr_t base = 0;
    bool found = false;
};

int find_named(dl_phdr_info* info, std::size_t, void* data) {
    auto* look = static_cast<module_lookup*>(data);
    const char* name = info->dlpi_name ? info->dlpi_name : "";
    if (*look->name == name) {
        look->base = info->dlpi_addr;
        look->found = true;
        return 1;
    }
    return 0;
}

// The main executable is where nearly every function lives; its bounds are
// cached so the common case costs two comparisons.
struct main_module {
    std::uintptr_t base = 0, low = ~std::uintptr_t{0}, high = 0;
    main_module() {
        dl_iterate_phdr(
            [](dl_phdr_info* info, std::size_t, void* data) {
                auto* self = static_cast<main_module*>(data);
                self->base = info->dlpi_addr;
                for (int i = 0; i < info->dlpi_phnum; ++i) {
                    const auto& ph = info->dlpi_phdr[i];
                    if (ph.p_type != PT_LOAD) continue;
                    std::uintptr_t start = info->dlpi_addr + ph.p_vaddr;
                    self->low = std::min(self->low, start);
                    self->high = std::max(self->high, start + ph.p_memsz);
                }
                return 1;  // the first entry is the main program
            },
            this);
    }
};

const main_module& main_exe() {
    static const main_module m;
    return m;
}

}  // namespace

code_ref make_code_ref(const void* address) {
    auto a = reinterpret_cast<std::uintptr_t>(address);
    const auto& m = main_exe();
    if (a >= m.low && a < m.high) return {"", a - m.base};
    module_hit hit{a, {}};
    dl_iterate_phdr(find_containing, &hit);
    if (!hit.found) throw serialization_error("mp: cannot send a function that lives outside every loaded module");
    return {hit.name, a - hit.base};
}

const void* resolve_code_ref(const code_ref& ref) {
    if (ref.module.empty()) return reinterpret_cast<const void*>(main_exe().base + ref.offset);
    module_lookup look{&ref.module};
    dl_iterate_phdr(find_named, &look);
    if (!look.found)
        throw serialization_error("mp: received a function from module '" + ref.module +
                                  "', which is not loaded in this process");
    return reinterpret_cast<const void*>(look.base + ref.offset);
}

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
