// Licensed under the MIT license.

using System;
using System.IO;
using System.Runtime.InteropServices;
using Microsoft.ML.Pruning.Runtime;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;

namespace Microsoft.ML.Pruning.Tests.Native
{
    [TestClass]
    public sealed class NativeLoadingTests
    {
        private const string Version = "GLIBCXX_3.4.32";

        [TestMethod]
        public void TorchInitializesAndComputes()
        {
            using var a = torch.tensor(new float[] { 1, 2, 3 });
            using var b = a * 2;
            CollectionAssert.AreEqual(new float[] { 2, 4, 6 }, b.data<float>().ToArray());
        }

        [TestMethod]
        public void LibTorchWarningsAreLimitedToErrorsInTheNativeEnvironment()
        {
            // Set by the library's module initializer before the first libtorch call (this process sets nothing itself).
            Assert.AreEqual("ERROR", Environment.GetEnvironmentVariable(NativeLogLevel.VariableName));
            if (!OperatingSystem.IsWindows())
                Assert.AreEqual("ERROR", Marshal.PtrToStringUTF8(getenv(NativeLogLevel.VariableName)), "libtorch reads the C library's environment");
        }

        [DllImport("libc", ExactSpelling = true)]
        private static extern IntPtr getenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name);

        [TestMethod]
        public void BuildOutputLibraryHasTheVersionMarkedWeakOrNeedsNoPatch()
        {
            if (!OperatingSystem.IsLinux())
                return;
            string library = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
            Assert.IsTrue(File.Exists(library), library);
            ushort? flags = ElfVersionNeeds.GetFlags(library, Version);
            Assert.IsNotNull(flags, "TorchSharp 0.107's shim is expected to need " + Version);
            bool systemHasVersion = File.Exists("/usr/lib/x86_64-linux-gnu/libstdc++.so.6")
                && ElfVersionNeeds.FileContainsVersionString("/usr/lib/x86_64-linux-gnu/libstdc++.so.6", Version);
            Assert.AreEqual(systemHasVersion ? 0 : 2, flags!.Value & 2);
        }

        [TestMethod]
        public void MarkWeakIsIdempotentAndTouchesOnlyTheFlag()
        {
            string library = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
            if (!File.Exists(library))
                return;
            string copy = Path.Combine(Path.GetTempPath(), "pruning-elf-" + Guid.NewGuid().ToString("N") + ".so");
            try
            {
                File.Copy(library, copy);
                byte[] before = File.ReadAllBytes(copy);
                ElfVersionNeeds.PatchResult first = ElfVersionNeeds.MarkWeak(copy, Version);
                ElfVersionNeeds.PatchResult second = ElfVersionNeeds.MarkWeak(copy, Version);
                Assert.AreEqual(ElfVersionNeeds.PatchResult.AlreadyWeak, second);
                Assert.AreEqual(2, ElfVersionNeeds.GetFlags(copy, Version)!.Value & 2);
                byte[] after = File.ReadAllBytes(copy);
                Assert.AreEqual(before.Length, after.Length);
                int differing = 0;
                for (int i = 0; i < before.Length; i++)
                    differing += before[i] != after[i] ? 1 : 0;
                Assert.AreEqual(first == ElfVersionNeeds.PatchResult.Patched ? 1 : 0, differing);
                Assert.AreEqual(ElfVersionNeeds.PatchResult.NotNeeded, ElfVersionNeeds.MarkWeak(copy, "GLIBCXX_9.9.9"));
            }
            finally
            {
                File.Delete(copy);
            }
        }

        [TestMethod]
        public void NonElfInputIsRejectedWithAClearMessage()
        {
            string path = Path.Combine(Path.GetTempPath(), "pruning-not-elf-" + Guid.NewGuid().ToString("N"));
            File.WriteAllText(path, "definitely not an ELF image, but long enough to have a header of 64 bytes......");
            try
            {
                var ex = Assert.ThrowsExactly<InvalidDataException>(() => ElfVersionNeeds.MarkWeak(path, Version));
                StringAssert.Contains(ex.Message, "not an ELF file");
            }
            finally
            {
                File.Delete(path);
            }
        }
    }
}
