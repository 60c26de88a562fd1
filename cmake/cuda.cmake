# The CUDA backend of the addon. CMakeLists.txt includes this file at file scope (enable_language
# must run there) and then calls eps_add_cuda(<target>).
#
# On when nvcc, cuBLAS and NCCL are all found. EPS_CUDA=0|1 (environment variable, or -DEPS_CUDA,
# which cmake-js passes as --CDEPS_CUDA=1) forces it off, or on: on with something missing stops the
# build with a message that names what is missing. CMAKE_CUDA_ARCHITECTURES (-D, then the
# environment variable of that name) defaults to "80;90": sm_90 machine code for H100/H200, sm_80
# for A100, and PTX for newer chips. The Hopper kernels (wgmma, TMA, setmaxnreg: native/cuda/
# grouped_gemm_sm90.cu, attention_sm90.cu) need the sm_90a target instead of sm_90: they are compiled
# on their own (eps_add_cuda), their architectures those of the rest with 90 made 90a.

set(_eps_cuda_force "")
if(DEFINED EPS_CUDA AND NOT "${EPS_CUDA}" STREQUAL "")
  set(_eps_cuda_force "${EPS_CUDA}")
elseif(DEFINED ENV{EPS_CUDA} AND NOT "$ENV{EPS_CUDA}" STREQUAL "")
  set(_eps_cuda_force "$ENV{EPS_CUDA}")
endif()
if(NOT _eps_cuda_force STREQUAL "")
  if(_eps_cuda_force)
    set(_eps_cuda_force 1)
  else()
    set(_eps_cuda_force 0)
  endif()
endif()

set(EPS_CUDA_ENABLED OFF)
set(_eps_cuda_missing "")

if(_eps_cuda_force STREQUAL "0")
  message(STATUS "eps-moe: CUDA backend: off (EPS_CUDA=0)")
else()
  # nvcc: CUDACXX, then PATH, then the usual install places (GPU hosts often keep it off PATH).
  if(NOT DEFINED ENV{CUDACXX} AND NOT CMAKE_CUDA_COMPILER)
    find_program(EPS_NVCC nvcc
                 HINTS ENV CUDA_HOME ENV CUDA_PATH ENV CUDAToolkit_ROOT
                 PATH_SUFFIXES bin
                 PATHS /usr/local/cuda /opt/cuda)
    if(EPS_NVCC)
      set(ENV{CUDACXX} "${EPS_NVCC}")
    endif()
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    list(APPEND _eps_cuda_missing "nvcc (the CUDA compiler; set CUDACXX or put it on PATH)")
  else()
    get_filename_component(_eps_cuda_bin "${CMAKE_CUDA_COMPILER}" DIRECTORY)
    get_filename_component(_eps_cuda_root "${_eps_cuda_bin}" DIRECTORY)
    if(NOT DEFINED CUDAToolkit_ROOT)
      set(CUDAToolkit_ROOT "${_eps_cuda_root}")
    endif()
  endif()

  find_package(CUDAToolkit QUIET)
  if(NOT CUDAToolkit_FOUND)
    list(APPEND _eps_cuda_missing "the CUDA toolkit (cudart)")
  elseif(NOT TARGET CUDA::cublas)
    list(APPEND _eps_cuda_missing "cuBLAS (libcublas in ${CUDAToolkit_LIBRARY_DIR})")
  endif()

  find_path(EPS_NCCL_INCLUDE_DIR nccl.h
            HINTS ENV NCCL_HOME ENV NCCL_ROOT ${CUDAToolkit_INCLUDE_DIRS}
            PATH_SUFFIXES include)
  find_library(EPS_NCCL_LIBRARY nccl
               HINTS ENV NCCL_HOME ENV NCCL_ROOT ${CUDAToolkit_LIBRARY_DIR}
               PATH_SUFFIXES lib lib64)
  if(NOT EPS_NCCL_INCLUDE_DIR OR NOT EPS_NCCL_LIBRARY)
    list(APPEND _eps_cuda_missing "NCCL (nccl.h and libnccl: set NCCL_HOME)")
  endif()

  if(_eps_cuda_missing)
    string(REPLACE ";" ", " _eps_cuda_missing_text "${_eps_cuda_missing}")
    if(_eps_cuda_force STREQUAL "1")
      message(FATAL_ERROR "eps-moe: EPS_CUDA=1 but the CUDA backend cannot be built; missing: ${_eps_cuda_missing_text}")
    endif()
    message(STATUS "eps-moe: CUDA backend: off (missing: ${_eps_cuda_missing_text})")
  else()
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR "${CMAKE_CUDA_ARCHITECTURES}" STREQUAL "")
      if(DEFINED ENV{CMAKE_CUDA_ARCHITECTURES} AND NOT "$ENV{CMAKE_CUDA_ARCHITECTURES}" STREQUAL "")
        set(CMAKE_CUDA_ARCHITECTURES "$ENV{CMAKE_CUDA_ARCHITECTURES}")
      else()
        set(CMAKE_CUDA_ARCHITECTURES "80;90")
      endif()
    endif()
    enable_language(CUDA)
    set(EPS_CUDA_ENABLED ON)
    message(STATUS "eps-moe: CUDA backend: on (CUDA ${CUDAToolkit_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}, "
                   "NCCL ${EPS_NCCL_LIBRARY})")
  endif()
endif()

# Adds the CUDA backend to `target` when it is on: the sources of native/cuda, the NCCL binding
# (native/bindings/nccl_binding.cc), EPS_WITH_CUDA, and the shared CUDA runtime, cuBLAS and NCCL.
function(eps_add_cuda target)
  if(NOT EPS_CUDA_ENABLED)
    return()
  endif()
  file(GLOB _eps_cuda_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/native/cuda/*.cu ${CMAKE_SOURCE_DIR}/native/cuda/*.cc)
  list(APPEND _eps_cuda_sources ${CMAKE_SOURCE_DIR}/native/bindings/nccl_binding.cc)
  set(_eps_sm90a_sources ${CMAKE_SOURCE_DIR}/native/cuda/grouped_gemm_sm90.cu ${CMAKE_SOURCE_DIR}/native/cuda/attention_sm90.cu)
  list(REMOVE_ITEM _eps_cuda_sources ${_eps_sm90a_sources})
  target_sources(${target} PRIVATE ${_eps_cuda_sources})

  # The Hopper kernels (grouped GEMM, prefill attention): wgmma and setmaxnreg exist only for the sm_90a
  # target (a plain sm_90 pass compiles their bodies out, and the kernels trap), and an sm_90 image beside
  # the sm_90a one would leave the driver a choice. So these files get their own architectures: the
  # target's, each 90 (90-real, 90-virtual) as 90a; "native"/"all"/"all-major" as 90a alone. Without a
  # 90 among them the kernels are not built: EPS_GROUPED_GEMM_SM90A=0 and EPS_ATTENTION_SM90A=0 tell
  # groupedGemmSm90Supported() and attentionSm90Supported(), and their ops take their other kernels.
  set(_eps_sm90a_archs "")
  set(_eps_sm90a_built 0)
  foreach(_arch IN LISTS CMAKE_CUDA_ARCHITECTURES)
    if(_arch MATCHES "^(native|all|all-major)$")
      set(_eps_sm90a_archs "90a")
      set(_eps_sm90a_built 1)
      break()
    elseif(_arch MATCHES "^90a?(-real|-virtual)?$")
      list(APPEND _eps_sm90a_archs "90a")
      set(_eps_sm90a_built 1)
    else()
      list(APPEND _eps_sm90a_archs "${_arch}")
    endif()
  endforeach()
  list(REMOVE_DUPLICATES _eps_sm90a_archs)
  add_library(eps_cuda_sm90a OBJECT ${_eps_sm90a_sources})
  set_target_properties(eps_cuda_sm90a PROPERTIES CUDA_RUNTIME_LIBRARY Shared CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
                                                   POSITION_INDEPENDENT_CODE ON CUDA_ARCHITECTURES "${_eps_sm90a_archs}")
  target_compile_definitions(eps_cuda_sm90a PRIVATE EPS_GROUPED_GEMM_SM90A=${_eps_sm90a_built}
                                                    EPS_ATTENTION_SM90A=${_eps_sm90a_built})
  target_compile_options(eps_cuda_sm90a PRIVATE -O3 -lineinfo)
  target_sources(${target} PRIVATE $<TARGET_OBJECTS:eps_cuda_sm90a>)
  message(STATUS "eps-moe: sm_90a sources (grouped_gemm_sm90.cu, attention_sm90.cu): architectures ${_eps_sm90a_archs} "
                 "(sm_90a kernels ${_eps_sm90a_built})")
  target_compile_definitions(${target} PRIVATE EPS_WITH_CUDA)
  target_include_directories(${target} PRIVATE ${EPS_NCCL_INCLUDE_DIR})
  # One CUDA runtime in the process: the shared one, which cuBLAS and NCCL use too.
  # (The target may predate enable_language(CUDA), so its architectures are set here, not inherited.)
  set_target_properties(${target} PROPERTIES CUDA_RUNTIME_LIBRARY Shared CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
                                             CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}")
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3 -lineinfo>)
  target_link_libraries(${target} PRIVATE CUDA::cudart CUDA::cublas ${EPS_NCCL_LIBRARY})
endfunction()
