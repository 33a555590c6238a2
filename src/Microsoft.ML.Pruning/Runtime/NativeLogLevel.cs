// Licensed under the MIT license.

using System;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Microsoft.ML.Pruning.Runtime
{
    /// <summary>
    /// Keeps libtorch's warnings off the application's standard error. On CPUs without AVX2 (and in many virtual
    /// machines) libtorch tries NNPACK for every batched convolution at inference, fails, and prints "Could not
    /// initialize NNPACK! Reason: Unsupported hardware." each time — over 100,000 lines for one evaluation of the
    /// test set — before falling back to its other kernels. As this assembly loads, this sets
    /// <c>TORCH_CPP_LOG_LEVEL</c> to <c>ERROR</c> unless the application has set it, and has libtorch's c10 library
    /// read it (libtorch applies the variable only when asked to, which PyTorch does at import and TorchSharp does not).
    /// </summary>
    internal static class NativeLogLevel
    {
        internal const string VariableName = "TORCH_CPP_LOG_LEVEL";

        [ModuleInitializer]
        [SuppressMessage("Usage", "CA2255:The 'ModuleInitializer' attribute should not be used in libraries",
            Justification = "The level must be applied before the first libtorch call, whichever entry point of this library makes it.")]
        internal static void Initialize()
        {
            try
            {
                if (Environment.GetEnvironmentVariable(VariableName) is null)
                {
                    Environment.SetEnvironmentVariable(VariableName, "ERROR");
                    // .NET keeps its own copy of the environment on Unix; native code reads the C library's.
                    if (!OperatingSystem.IsWindows())
                        _ = setenv(VariableName, "ERROR", 0);
                }
                InitializeC10Logging();
            }
            catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
            {
                // Another platform or libtorch build (the entry point is the Itanium C++ ABI name): libtorch keeps its level.
            }
        }

        /// <summary><c>c10::initLogging()</c>: applies <c>TORCH_CPP_LOG_LEVEL</c>.</summary>
        [DllImport("c10", EntryPoint = "_ZN3c1011initLoggingEv", ExactSpelling = true)]
        private static extern void InitializeC10Logging();

        [DllImport("libc", ExactSpelling = true)]
        private static extern int setenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);
    }
}
