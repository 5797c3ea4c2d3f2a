# UCX support: decides KVFERRY_HAVE_UCX (the `ucx` backend, src/backends/ucx/).
#
# AUTO builds it wherever pkg-config finds UCX (Debian: libucx-dev, installed by
# scripts/bootstrap.sh); OFF leaves it out; ON requires it. At run time `kvferry info`
# says whether UCX found a transport.
set(KVFERRY_ENABLE_UCX AUTO CACHE STRING "Build the ucx backend: AUTO, ON or OFF")
set_property(CACHE KVFERRY_ENABLE_UCX PROPERTY STRINGS AUTO ON OFF)
set(KVFERRY_HAVE_UCX OFF)
if(NOT KVFERRY_ENABLE_UCX STREQUAL "OFF")
  pkg_check_modules(UCX IMPORTED_TARGET ucx)
  if(UCX_FOUND)
    set(KVFERRY_HAVE_UCX ON)
    message(STATUS "UCX ${UCX_VERSION}: the ucx backend is built")
  elseif(KVFERRY_ENABLE_UCX STREQUAL "ON")
    message(FATAL_ERROR "KVFERRY_ENABLE_UCX=ON but pkg-config found no UCX (install libucx-dev)")
  else()
    message(STATUS "UCX not found: built without the ucx backend")
  endif()
endif()
