/* Wine 8 lacks ProcessPrng in bcryptprimitives.dll, which Rust's std imports. This DLL,
 * placed next to the .exe (with WINEDLLOVERRIDES=bcryptprimitives=n,b), provides it on top
 * of RtlGenRandom (advapi32's SystemFunction036). Used only to run Windows builds under Wine. */
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    return SystemFunction036(data, (ULONG)length);
}
