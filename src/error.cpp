// error.cpp — mp::error_category(): names the codes of mp's own exceptions
// and makes the ones with a standard meaning compare equal to std::errc.
#include "mp/error.hpp"

#include <string>

namespace mp {

namespace {

class mp_category final : public std::error_category {
public:
    [[nodiscard]] const char* name() const noexcept override { return "mp"; }

    [[nodiscard]] std::string message(int value) const override {
        switch (static_cast<errc>(value)) {
            case errc::error: return "mp error";
            case errc::bootstrap: return "mp::init was not called first in main";
            case errc::serialization: return "value could not be serialized";
            case errc::timeout: return "timed out";
            case errc::queue_empty: return "queue empty";
            case errc::queue_full: return "queue full";
            case errc::eof: return "the other end is gone";
            case errc::closed: return "used after close";
            case errc::process: return "process misused";
            case errc::value: return "value out of range";
            case errc::broken_barrier: return "broken barrier";
            case errc::worker_crashed: return "worker process died";
            case errc::cancelled: return "cancelled";
            case errc::authentication: return "authentication failed";
            case errc::not_exposed: return "method not exposed";
            case errc::remote: return "exception in another process";
            case errc::lock: return "lock misused";
            case errc::mpi: return "MPI failure";
        }
        return "unknown mp error";
    }

    [[nodiscard]] std::error_condition default_error_condition(int value) const noexcept override {
        switch (static_cast<errc>(value)) {
            case errc::timeout: return std::errc::timed_out;
            case errc::cancelled: return std::errc::operation_canceled;
            default: return {value, *this};
        }
    }
};

}  // namespace

const std::error_category& error_category() noexcept {
    static const mp_category category;
    return category;
}

}  // namespace mp
