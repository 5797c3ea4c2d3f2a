# kvferry::kvferry imported from an existing build tree (KVFERRY_PREBUILT_BUILD_DIR), so
# that the Python module builds without compiling the library a second time.
set(_kvf_soname "libkvferry.so.${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}")
set(_kvf_lib "${KVFERRY_PREBUILT_BUILD_DIR}/src/libkvferry.so.${PROJECT_VERSION}")
if(NOT EXISTS "${_kvf_lib}")
  message(FATAL_ERROR "KVFERRY_PREBUILT_BUILD_DIR: ${_kvf_lib} does not exist (build the library there first)")
endif()
add_library(kvferry::kvferry SHARED IMPORTED)
set_target_properties(kvferry::kvferry PROPERTIES
  IMPORTED_LOCATION "${_kvf_lib}"
  IMPORTED_SONAME "${_kvf_soname}"
  INTERFACE_INCLUDE_DIRECTORIES "${PROJECT_SOURCE_DIR}/include"
  INTERFACE_COMPILE_FEATURES cxx_std_20
  INTERFACE_LINK_LIBRARIES Threads::Threads)
