# install.cmake — what `cmake --install` puts under the prefix: the library,
# the public headers (with the generated <mp/version.hpp>), the CMake package
# (find_package(mp) → mp::mp) and a pkg-config file (mp.pc).
include(CMakePackageConfigHelpers)

install(TARGETS mp EXPORT mpTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY include/mp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_BINARY_DIR}/include/mp/version.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/mp)

set(mp_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/mp)
install(EXPORT mpTargets NAMESPACE mp:: DESTINATION ${mp_cmake_dir})
configure_package_config_file(cmake/mpConfig.cmake.in
  ${PROJECT_BINARY_DIR}/mpConfig.cmake
  INSTALL_DESTINATION ${mp_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/mpConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/mpConfig.cmake ${PROJECT_BINARY_DIR}/mpConfigVersion.cmake
  DESTINATION ${mp_cmake_dir})

# mp.pc finds the prefix from its own place (${pcfiledir}), so the installed
# tree can be moved, and `cmake --install --prefix` anywhere works.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(mp_pc_prefix "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH mp_pc_up "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
  string(REGEX REPLACE "/$" "" mp_pc_up "${mp_pc_up}")
  set(mp_pc_prefix "\${pcfiledir}/${mp_pc_up}")
endif()
# A static libmp needs libcrypto on every link line; a shared one hides it.
get_target_property(mp_type mp TYPE)
if(mp_type STREQUAL "STATIC_LIBRARY")
  set(mp_pc_requires "libcrypto")
  set(mp_pc_requires_private "")
else()
  set(mp_pc_requires "")
  set(mp_pc_requires_private "libcrypto")
endif()
configure_file(cmake/mp.pc.in ${PROJECT_BINARY_DIR}/mp.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/mp.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
