# run_consumer.cmake — run by ctest (cmake -P): installs the current build into
# a scratch prefix, then configures, builds and runs tests/install against it.
#   MP_BUILD_DIR, MP_CONSUMER_SOURCE, MP_WORK_DIR, MP_GENERATOR,
#   MP_CXX_COMPILER, MP_BUILD_TYPE, MP_CXX_FLAGS, MP_EXE_LINKER_FLAGS
set(prefix ${MP_WORK_DIR}/prefix)
set(build ${MP_WORK_DIR}/build)
file(REMOVE_RECURSE ${MP_WORK_DIR})

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message(STATUS "${what}:\n${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc})")
  endif()
endfunction()

run("install mp" ${CMAKE_COMMAND} --install ${MP_BUILD_DIR} --prefix ${prefix})
# The consumer is built the way mp was (same compiler, and the sanitizer flags
# of an ASan build, which a sanitized static library needs at link time).
run("configure the consumer" ${CMAKE_COMMAND} -S ${MP_CONSUMER_SOURCE} -B ${build} -G ${MP_GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_CXX_COMPILER=${MP_CXX_COMPILER}
    -DCMAKE_BUILD_TYPE=${MP_BUILD_TYPE}
    "-DCMAKE_CXX_FLAGS=${MP_CXX_FLAGS}"
    "-DCMAKE_EXE_LINKER_FLAGS=${MP_EXE_LINKER_FLAGS}")
run("build the consumer" ${CMAKE_COMMAND} --build ${build})
run("run the consumer" ${build}/app)
file(REMOVE_RECURSE ${MP_WORK_DIR})
