# compile_check.cmake — run by ctest for one compile_fail case (cmake -P).
#   MP_CXX, MP_SOURCE, MP_INCLUDES (list), MP_EXPECT (fail|pass), MP_EXPECT_FILE
#   (defines MP_EXPECT_REGEXES).
include(${MP_EXPECT_FILE})
set(args -std=c++20 -fsyntax-only)
foreach(dir IN LISTS MP_INCLUDES)
  if(dir)
    list(APPEND args -I${dir})
  endif()
endforeach()
execute_process(COMMAND ${MP_CXX} ${args} ${MP_SOURCE}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)

if(MP_EXPECT STREQUAL "pass")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${MP_SOURCE} must compile, but the compiler said:\n${out}")
  endif()
  message(STATUS "${MP_SOURCE} compiles, as it must")
  return()
endif()

if(rc EQUAL 0)
  message(FATAL_ERROR "${MP_SOURCE} compiled, but it must not")
endif()
set(missing)
foreach(re IN LISTS MP_EXPECT_REGEXES)
  if(NOT out MATCHES "${re}")
    list(APPEND missing "${re}")
  endif()
endforeach()
if(missing)
  string(REPLACE ";" "\n  " missing "${missing}")
  message(FATAL_ERROR "${MP_SOURCE} failed to compile, as it must, but the output lacks:\n  ${missing}\n"
                      "The compiler said:\n${out}")
endif()
message(STATUS "${MP_SOURCE} fails to compile with the expected message")
