# run_consumer.cmake — run by ctest (cmake -P): builds and runs a consumer of
# mp the way a user would, with no C++ standard of its own. MP_MODE says how:
#   find_package      install the build into a scratch prefix, then a CMake
#                     project with find_package(mp) (tests/install)
#   pkg_config        install, then one compiler command with
#                     `pkg-config --cflags --libs mp`
#   add_subdirectory  a CMake project that adds mp's source tree
#                     (tests/install/subdirectory), with MP_SUB_COMPILER and
#                     mp's examples when MP_WITH_EXAMPLES is ON
#   find_package_mpi  install, then a CMake project with
#                     find_package(mp COMPONENTS mpi) linking mp::mpi
#                     (tests/install/mpi), run as `MP_MPIEXEC -n 2 app`
# Other inputs: MP_BUILD_DIR, MP_SOURCE_DIR, MP_WORK_DIR, MP_GENERATOR,
# MP_CXX_COMPILER, MP_BUILD_TYPE, MP_CXX_FLAGS, MP_EXE_LINKER_FLAGS,
# MP_LAUNCHER, MP_VERSION; MP_MPIEXEC (a list: mpiexec and its flags) for
# find_package_mpi.
set(consumer ${MP_SOURCE_DIR}/tests/install)
set(prefix ${MP_WORK_DIR}/prefix)
set(build ${MP_WORK_DIR}/build)
file(REMOVE_RECURSE ${MP_WORK_DIR})
file(MAKE_DIRECTORY ${build})

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message(STATUS "${what}:\n${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc})")
  endif()
endfunction()

# The consumer is built the way mp was (same compiler, and the sanitizer flags
# of an ASan build, which a sanitized static library needs at link time).
set(common_args -G ${MP_GENERATOR}
    -DCMAKE_BUILD_TYPE=${MP_BUILD_TYPE}
    "-DCMAKE_CXX_FLAGS=${MP_CXX_FLAGS}"
    "-DCMAKE_EXE_LINKER_FLAGS=${MP_EXE_LINKER_FLAGS}"
    -DMP_EXPECTED_VERSION=${MP_VERSION})
if(MP_LAUNCHER)
  list(APPEND common_args -DCMAKE_CXX_COMPILER_LAUNCHER=${MP_LAUNCHER})
endif()

if(MP_MODE STREQUAL "find_package")
  run("install mp" ${CMAKE_COMMAND} --install ${MP_BUILD_DIR} --prefix ${prefix})
  run("configure the consumer" ${CMAKE_COMMAND} -S ${consumer} -B ${build} ${common_args}
      -DCMAKE_CXX_COMPILER=${MP_CXX_COMPILER} -DCMAKE_PREFIX_PATH=${prefix})
  run("build the consumer" ${CMAKE_COMMAND} --build ${build})
elseif(MP_MODE STREQUAL "find_package_mpi")
  run("install mp" ${CMAKE_COMMAND} --install ${MP_BUILD_DIR} --prefix ${prefix})
  run("configure the consumer" ${CMAKE_COMMAND} -S ${consumer}/mpi -B ${build} ${common_args}
      -DCMAKE_CXX_COMPILER=${MP_CXX_COMPILER} -DCMAKE_PREFIX_PATH=${prefix})
  run("build the consumer" ${CMAKE_COMMAND} --build ${build})
  run("run the consumer under mpiexec" ${MP_MPIEXEC} -n 2 ${build}/app)
  file(REMOVE_RECURSE ${MP_WORK_DIR})
  return()
elseif(MP_MODE STREQUAL "pkg_config")
  run("install mp" ${CMAKE_COMMAND} --install ${MP_BUILD_DIR} --prefix ${prefix})
  file(GLOB_RECURSE pc_files ${prefix}/*/mp.pc)
  if(NOT pc_files)
    message(FATAL_ERROR "the install put no mp.pc under ${prefix}")
  endif()
  list(GET pc_files 0 pc_file)
  get_filename_component(pc_dir ${pc_file} DIRECTORY)
  execute_process(COMMAND ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${pc_dir} pkg-config --cflags --libs mp
    RESULT_VARIABLE rc OUTPUT_VARIABLE flags ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pkg-config --cflags --libs mp failed: ${err}")
  endif()
  message(STATUS "pkg-config --cflags --libs mp: ${flags}")
  separate_arguments(flags UNIX_COMMAND "${flags}")
  separate_arguments(cxx_flags UNIX_COMMAND "${MP_CXX_FLAGS} ${MP_EXE_LINKER_FLAGS}")
  run("compile the consumer" ${MP_CXX_COMPILER} ${cxx_flags} -O1 "-DMP_EXPECTED_VERSION=\"${MP_VERSION}\""
      ${consumer}/main.cpp -o ${build}/app ${flags})
elseif(MP_MODE STREQUAL "add_subdirectory")
  run("configure the consumer with ${MP_SUB_COMPILER}" ${CMAKE_COMMAND} -S ${consumer}/subdirectory -B ${build}
      ${common_args} -DCMAKE_CXX_COMPILER=${MP_SUB_COMPILER} -DMP_SOURCE_DIR=${MP_SOURCE_DIR}
      -DMP_WITH_EXAMPLES=${MP_WITH_EXAMPLES})
  run("build the consumer" ${CMAKE_COMMAND} --build ${build} -j 2)
else()
  message(FATAL_ERROR "unknown MP_MODE '${MP_MODE}'")
endif()
run("run the consumer" ${build}/app)
file(REMOVE_RECURSE ${MP_WORK_DIR})
