# CUDA support (issue 5): decides KVFERRY_HAVE_CUDA.
#
# nvcc is on every machine of this project (CI included), so AUTO compiles the GPU code
# wherever it is found; the runtime is linked statically (CUDA::cudart_static), so the
# library needs no CUDA shared library at run time and works without a GPU driver (the
# cuda_ipc probe then says why it is unusable).
set(KVFERRY_HAVE_CUDA OFF)
if(NOT KVFERRY_ENABLE_CUDA STREQUAL "OFF")
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(ENV{CUDACXX} /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # Hopper (the H200 of the device machine). Add 80 for Ampere: each arch adds
      # compile time on CI's two cores.
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(CMAKE_CUDA_STANDARD 17)  # this CMake does not know CUDA20; the kernels need 17
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    set(KVFERRY_HAVE_CUDA ON)
    set(KVFERRY_CUDA_WARNINGS -Xcompiler=-Wall,-Wextra)
    if(KVFERRY_WERROR)
      list(APPEND KVFERRY_CUDA_WARNINGS -Werror=all-warnings -Xcompiler=-Werror)
    endif()
    message(STATUS "CUDA ${CUDAToolkit_VERSION}: vram and the cuda_ipc backend are built (archs ${CMAKE_CUDA_ARCHITECTURES})")
  elseif(KVFERRY_ENABLE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "KVFERRY_ENABLE_CUDA=ON but no CUDA compiler was found")
  else()
    message(STATUS "No CUDA compiler: built without vram support")
  endif()
endif()
