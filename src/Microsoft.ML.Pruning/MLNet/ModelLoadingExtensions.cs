// Licensed under the MIT license.

using System;
using System.IO;
using System.Linq;
using Microsoft.ML.Pruning.MLNet;

namespace Microsoft.ML
{
    /// <summary>
    /// Loading a model file that may be damaged or hostile (uploaded, downloaded, copied across machines) so that every
    /// failure names its cause.
    /// </summary>
    public static class ModelLoadingExtensions
    {
        /// <summary>
        /// Loads a model as <see cref="ModelOperationsCatalog.Load(string, out DataViewSchema)"/> does, after checking what
        /// ML.NET reads before any component's loader runs: the zip's structure, every entry's CRC-32 (which .NET's zip
        /// reader does not compare) and ML.NET's header, string table and tail of every <c>Model.key</c>. The image
        /// classifier's own entries are then checked by its loader (sizes, SHA-256 checksums, every field of the network
        /// definition, finite weights), as with <c>Load</c>. Works for any ML.NET model file.
        /// </summary>
        /// <param name="catalog">The model operations catalog, <c>mlContext.Model</c>.</param>
        /// <param name="filePath">The model zip.</param>
        /// <param name="inputSchema">The schema of the data the model was trained on.</param>
        /// <returns>The loaded model.</returns>
        /// <exception cref="FormatException">The file is damaged or not a model; the message names the zip entry and
        /// the field (for example <c>model.zip: zip entry 'TransformerChain/Model.key': ML.NET's header field CbModel is
        /// …</c>).</exception>
        /// <exception cref="FileNotFoundException">There is no file at <paramref name="filePath"/>.</exception>
        public static ITransformer LoadChecked(this ModelOperationsCatalog catalog, string filePath, out DataViewSchema inputSchema)
        {
            ArgumentNullException.ThrowIfNull(catalog);
            ArgumentException.ThrowIfNullOrEmpty(filePath);
            var info = new FileInfo(filePath);
            if (!info.Exists)
                throw new FileNotFoundException($"Model file '{filePath}' does not exist.", filePath);
            if (info.Length > ModelFileCheck.MaxFileBytes)
                throw new FormatException($"{filePath}: {info.Length} bytes, more than the {ModelFileCheck.MaxFileBytes} a model file may have.");
            return Load(catalog, File.ReadAllBytes(filePath), filePath, out inputSchema);
        }

        /// <summary>
        /// Loads a model from <paramref name="stream"/> as <see cref="LoadChecked(ModelOperationsCatalog, string, out DataViewSchema)"/>
        /// does from a file. The stream is read to its end (at most 2 GiB) before anything is parsed.
        /// </summary>
        /// <param name="catalog">The model operations catalog, <c>mlContext.Model</c>.</param>
        /// <param name="stream">The model zip.</param>
        /// <param name="inputSchema">The schema of the data the model was trained on.</param>
        /// <returns>The loaded model.</returns>
        /// <exception cref="FormatException">The stream is damaged or not a model; the message names the zip entry and the field.</exception>
        public static ITransformer LoadChecked(this ModelOperationsCatalog catalog, Stream stream, out DataViewSchema inputSchema)
        {
            ArgumentNullException.ThrowIfNull(catalog);
            ArgumentNullException.ThrowIfNull(stream);
            if (!stream.CanRead)
                throw new ArgumentException("The model stream cannot be read.", nameof(stream));
            using var copy = new MemoryStream();
            var buffer = new byte[81920];
            int n;
            while ((n = stream.Read(buffer, 0, buffer.Length)) > 0)
            {
                if (copy.Length + n > ModelFileCheck.MaxFileBytes)
                    throw new FormatException($"model stream: more than the {ModelFileCheck.MaxFileBytes} bytes a model file may have.");
                copy.Write(buffer, 0, n);
            }
            return Load(catalog, copy.ToArray(), "model stream", out inputSchema);
        }

        private static ITransformer Load(ModelOperationsCatalog catalog, byte[] bytes, string source, out DataViewSchema inputSchema)
        {
            ModelFileCheck.Check(bytes, source);
            try
            {
                return catalog.Load(new MemoryStream(bytes, writable: false), out inputSchema);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                // The classifier's loader names the entry and field in a FormatException somewhere in ML.NET's wrapping;
                // bring that message out. Anything else is ML.NET's own refusal of a structurally sound file.
                Exception? named = Chain(ex).OfType<FormatException>().FirstOrDefault(e => e.Message.Contains("Model.key", StringComparison.Ordinal)
                    || e.Message.Contains("Network.json", StringComparison.Ordinal) || e.Message.Contains("Weights.bin", StringComparison.Ordinal));
                string? refused = named is null ? ModelFileCheck.FindRefusedEntry(MLNetInternals.GetEnvironment(catalog), bytes) : null;
                string message = named is not null ? $"{source}: {named.Message}"
                    : refused is not null ? $"{source}: {refused}."
                    : $"{source}: ML.NET refused the model: {ex.Message}";
                throw new FormatException(message, ex);
            }
        }

        private static System.Collections.Generic.IEnumerable<Exception> Chain(Exception ex)
        {
            for (Exception? e = ex; e is not null; e = e.InnerException)
                yield return e;
        }
    }
}
