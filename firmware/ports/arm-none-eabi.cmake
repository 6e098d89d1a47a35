# Toolchain file of the ARM ports (qemu, stm32f4): bare-metal Cortex-M4 with arm-none-eabi-gcc and
# picolibc (Debian packages gcc-arm-none-eabi, picolibc-arm-none-eabi). A port with an FPU adds
# its float ABI to its target's compile and link options.
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)   # no startup files for a test link
set(CMAKE_C_FLAGS_INIT "-mcpu=cortex-m4 -mthumb --specs=picolibc.specs")
set(CMAKE_EXE_LINKER_FLAGS_INIT "-nostartfiles -Wl,--gc-sections")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
