// Licensed under the MIT license.

using System;
using System.IO;
using System.Linq;
using System.Text;
#if !ELF_HELPERS_ONLY
using Microsoft.Build.Framework;

// ELF_HELPERS_ONLY: the library compiles just the ELF helpers, without MSBuild, for the same fix-up at run time
// (Native/TorchSharpNativeLibrary.cs).

/// <summary>
/// MSBuild task that lets TorchSharp's native shim load on Linux distributions whose libstdc++ predates a
/// symbol version it asks for (TorchSharp 0.107 needs GLIBCXX_3.4.32; Debian 12 and Ubuntu 22.04 stop at 3.4.30).
/// </summary>
/// <remarks>
/// The only symbol of that version the shim imports, <c>std::ios_base_library_init()</c>, has no relocation,
/// so the requirement can be marked weak (VER_FLG_WEAK on the version's Vernaux entry in <c>.gnu.version_r</c>):
/// the dynamic loader then accepts a libstdc++ without it. The task edits the copy in the build output only,
/// never the package cache, does nothing when a system libstdc++ already defines the version, and is
/// idempotent.
/// </remarks>
public sealed class MarkSymbolVersionWeak : Microsoft.Build.Utilities.Task
{
    /// <summary>The ELF files to patch; missing files are skipped.</summary>
    [Required]
    public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();

    /// <summary>The symbol version to mark weak, e.g. GLIBCXX_3.4.32.</summary>
    [Required]
    public string Version { get; set; } = "";

    /// <summary>Libraries that, when one of them defines <see cref="Version"/>, make the patch unnecessary.</summary>
    public ITaskItem[] SystemLibraries { get; set; } = Array.Empty<ITaskItem>();

    public override bool Execute()
    {
        if (SystemLibraries.Any(l => File.Exists(l.ItemSpec) && ElfVersionNeeds.FileContainsVersionString(l.ItemSpec, Version)))
        {
            Log.LogMessage(MessageImportance.Low, $"A system libstdc++ defines {Version}; nothing to patch.");
            return true;
        }

        foreach (ITaskItem item in Files)
        {
            string path = item.ItemSpec;
            if (!File.Exists(path))
                continue;
            try
            {
                switch (ElfVersionNeeds.MarkWeak(path, Version))
                {
                    case ElfVersionNeeds.PatchResult.Patched:
                        Log.LogMessage(MessageImportance.High, $"Marked {Version} weak in {path}");
                        break;
                    case ElfVersionNeeds.PatchResult.AlreadyWeak:
                        Log.LogMessage(MessageImportance.Low, $"{Version} is already weak in {path}");
                        break;
                    case ElfVersionNeeds.PatchResult.NotNeeded:
                        Log.LogMessage(MessageImportance.Low, $"{path} does not need {Version}");
                        break;
                }
            }
            catch (InvalidDataException ex)
            {
                Log.LogWarning($"Could not patch {path}: {ex.Message}");
            }
        }
        return !Log.HasLoggedErrors;
    }
}

#endif

/// <summary>Reads and edits the version-needs section (<c>SHT_GNU_verneed</c>) of a little-endian ELF64 file.</summary>
internal static class ElfVersionNeeds
{
    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlagWeak = 0x2;

    public enum PatchResult { NotNeeded, AlreadyWeak, Patched }

    /// <summary>Returns the flags of the Vernaux entry naming <paramref name="version"/>, or null if the file does not need it.</summary>
    public static ushort? GetFlags(string path, string version)
    {
        byte[] image = File.ReadAllBytes(path);
        int offset = FindVernaux(image, version);
        return offset < 0 ? null : BitConverter.ToUInt16(image, offset + 4);
    }

    /// <summary>Sets VER_FLG_WEAK on the Vernaux entry naming <paramref name="version"/>, rewriting the file only when needed.</summary>
    public static PatchResult MarkWeak(string path, string version)
    {
        byte[] image = File.ReadAllBytes(path);
        int offset = FindVernaux(image, version);
        if (offset < 0)
            return PatchResult.NotNeeded;
        ushort flags = BitConverter.ToUInt16(image, offset + 4);
        if ((flags & VerFlagWeak) != 0)
            return PatchResult.AlreadyWeak;

        // Only the two flag bytes change. (The task is compiled against netstandard2.0, hence no Span APIs.)
        BitConverter.GetBytes((ushort)(flags | VerFlagWeak)).CopyTo(image, offset + 4);
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Write))
        {
            stream.Position = offset + 4;
            stream.Write(image, offset + 4, 2);
        }
        return PatchResult.Patched;
    }

    /// <summary>True when the file contains the NUL-terminated string <paramref name="version"/> (how a library defines it in .dynstr).</summary>
    public static bool FileContainsVersionString(string path, string version)
    {
        byte[] needle = Encoding.ASCII.GetBytes(version + "\0");
        byte[] image = File.ReadAllBytes(path);
        for (int i = 0; i + needle.Length <= image.Length; i++)
        {
            if (image[i] == needle[0] && NameEquals(image, i, version))
                return true;
        }
        return false;
    }

    /// <summary>The offset of the Vernaux entry naming <paramref name="version"/> in <paramref name="image"/>, or -1.</summary>
    internal static int FindVernaux(byte[] image, string version)
    {
        if (image.Length < 64 || image[0] != 0x7f || image[1] != (byte)'E' || image[2] != (byte)'L' || image[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (image[4] != 2 || image[5] != 1)
            throw new InvalidDataException("only little-endian ELF64 is supported");

        long sectionTable = (long)BitConverter.ToUInt64(image, 0x28);
        int sectionSize = BitConverter.ToUInt16(image, 0x3A);
        int sectionCount = BitConverter.ToUInt16(image, 0x3C);
        for (int i = 0; i < sectionCount; i++)
        {
            int header = checked((int)(sectionTable + (long)i * sectionSize));
            if (BitConverter.ToUInt32(image, header + 4) != ShtGnuVerneed)
                continue;
            int sectionOffset = checked((int)BitConverter.ToUInt64(image, header + 24));
            uint stringSectionIndex = BitConverter.ToUInt32(image, header + 40);
            int entryCount = (int)BitConverter.ToUInt32(image, header + 44);
            int stringHeader = checked((int)(sectionTable + stringSectionIndex * sectionSize));
            int strings = checked((int)BitConverter.ToUInt64(image, stringHeader + 24));

            int verneed = sectionOffset;
            for (int n = 0; n < entryCount; n++)
            {
                int auxCount = BitConverter.ToUInt16(image, verneed + 2);
                int vernaux = verneed + (int)BitConverter.ToUInt32(image, verneed + 8);
                for (int a = 0; a < auxCount; a++)
                {
                    int name = strings + (int)BitConverter.ToUInt32(image, vernaux + 8);
                    if (NameEquals(image, name, version))
                        return vernaux;
                    vernaux += (int)BitConverter.ToUInt32(image, vernaux + 12);
                }
                verneed += (int)BitConverter.ToUInt32(image, verneed + 12);
            }
        }
        return -1;
    }

    private static bool NameEquals(byte[] image, int offset, string name)
    {
        if (offset + name.Length >= image.Length)
            return false;
        for (int i = 0; i < name.Length; i++)
        {
            if (image[offset + i] != (byte)name[i])
                return false;
        }
        return image[offset + name.Length] == 0;
    }
}
