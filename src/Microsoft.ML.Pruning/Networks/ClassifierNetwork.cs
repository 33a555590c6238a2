// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML.Pruning.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Networks
{
    /// <summary>
    /// A TorchSharp image classifier together with the <see cref="NetworkDefinition"/> it was built from.
    /// It owns its module: dispose it to release the native memory.
    /// </summary>
    public sealed class ClassifierNetwork : IDisposable
    {
        private readonly object _planGate = new();
        private InferencePlan? _plan;
        private InferenceBackend _backend = InferenceBackend.Compact;
        private bool _disposed;

        private ClassifierNetwork(NetworkDefinition definition, nn.Module<Tensor, Tensor> module, Device device)
        {
            Definition = definition;
            Module = module;
            Device = device;
        }

        /// <summary>The architecture.</summary>
        public NetworkDefinition Definition { get; }

        /// <summary>The device the weights live on.</summary>
        public Device Device { get; private set; }

        internal nn.Module<Tensor, Tensor> Module { get; }

        /// <summary>Builds the network with freshly initialized weights; seed torch first for reproducible weights.</summary>
        public static ClassifierNetwork Create(NetworkDefinition definition, Device? device = null)
        {
            ArgumentNullException.ThrowIfNull(definition);
            var module = NetworkModules.Build(definition);
            var network = new ClassifierNetwork(definition, module, CPU);
            if (device is not null)
                network.MoveTo(device);
            return network;
        }

        /// <summary>Moves the weights to <paramref name="device"/>.</summary>
        public void MoveTo(Device device)
        {
            ThrowIfDisposed();
            ResetCompiledForm();
            Module.to(device);
            Device = device;
        }

        /// <summary>Logits for a batch [N,C,H,W] (or [N, C·H·W]); the caller owns the result.</summary>
        public Tensor Forward(Tensor images)
        {
            ThrowIfDisposed();
            return Module.call(ReshapeInput(images));
        }

        /// <summary>Class probabilities for a batch, in evaluation mode without gradients.</summary>
        public Tensor Predict(Tensor images)
        {
            ThrowIfDisposed();
            Module.eval();
            using var noGrad = no_grad();
            return Module.call(ReshapeInput(images)).softmax(1);
        }

        /// <summary>
        /// Class probabilities for the images in <paramref name="images"/>, laid out one after another (C·H·W values each,
        /// channels first), written to <paramref name="probabilities"/> (one row of <see cref="NetworkDefinition.Classes"/>
        /// values per image). This is the scoring entry point of the ML.NET transformer; it is safe to call from several
        /// threads at once.
        /// </summary>
        /// <remarks>
        /// With <see cref="InferenceBackend.Compact"/> (the default) on the CPU, the network is compiled on first use into
        /// the compact runtime, whose cost follows the stored weights (shift + pointwise and sparse kernels, batch norm
        /// folded). The compiled form holds a copy of the weights of that moment: after changing weights through
        /// <see cref="NamedParameters"/> or <see cref="StateDictionary"/>, call <see cref="ResetCompiledForm"/>.
        /// </remarks>
        /// <exception cref="ArgumentException">The lengths do not describe the same whole number of images, or a value is
        /// not finite.</exception>
        public void Predict(ReadOnlySpan<float> images, Span<float> probabilities)
        {
            ThrowIfDisposed();
            int size = Definition.Input.Size, classes = Definition.Classes;
            if (images.Length % size != 0)
                throw new ArgumentException($"The input holds {images.Length} values, not a whole number of {Definition.Input} images ({size} values each).", nameof(images));
            int count = images.Length / size;
            if (probabilities.Length != count * classes)
                throw new ArgumentException($"{count} images need {count * classes} probabilities ({classes} each); the output holds {probabilities.Length}.", nameof(probabilities));
            int bad = IndexOfNonFinite(images);
            if (bad >= 0)
                throw new ArgumentException($"Image {bad / size} has a non-finite value ({images[bad]}) at position {bad % size}.", nameof(images));
            if (count == 0)
                return;
            if (CompiledForm() is InferencePlan plan)
            {
                plan.Predict(images, probabilities);
                return;
            }
            using var scope = NewDisposeScope();
            float[] copy = images.ToArray();
            Tensor batch = frombuffer(copy, ScalarType.Float32, copy.Length, 0, false).view(count, size).to(Device);
            Tensor result = Predict(batch).cpu().contiguous();
            System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(result.bytes).CopyTo(probabilities);
        }

        /// <summary>Which engine <see cref="Predict(ReadOnlySpan{float}, Span{float})"/> scores with. Default
        /// <see cref="InferenceBackend.Compact"/>; off the CPU, libtorch always.</summary>
        public InferenceBackend Backend
        {
            get => _backend;
            set
            {
                if (!Enum.IsDefined(value))
                    throw new ArgumentOutOfRangeException(nameof(value), value, "Unknown inference backend.");
                _backend = value;
            }
        }

        /// <summary>Drops the compiled form of the network, so that the next prediction compiles the current weights.</summary>
        public void ResetCompiledForm()
        {
            lock (_planGate)
            {
                _plan?.Dispose();
                _plan = null;
            }
        }

        /// <summary>The compact runtime's plan when it scores (compiled on first use), or null when libtorch does.</summary>
        internal InferencePlan? CompiledForm()
        {
            if (_backend != InferenceBackend.Compact || Device.type != DeviceType.CPU)
                return null;
            lock (_planGate)
            {
                ThrowIfDisposed();
                return _plan ??= InferencePlan.Compile(this);
            }
        }

        private static int IndexOfNonFinite(ReadOnlySpan<float> values)
        {
            int i = 0;
            if (System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated)
            {
                // x − x is 0 for finite x and NaN for NaN and ±∞.
                var zero = System.Runtime.Intrinsics.Vector256<float>.Zero;
                for (; i + 8 <= values.Length; i += 8)
                {
                    var v = System.Runtime.Intrinsics.Vector256.Create(values.Slice(i, 8));
                    if (!System.Runtime.Intrinsics.Vector256.EqualsAll(v - v, zero))
                        break;
                }
            }
            for (; i < values.Length; i++)
            {
                if (!float.IsFinite(values[i]))
                    return i;
            }
            return -1;
        }

        /// <summary>The parameters and buffers by name (e.g. <c>conv1.weight</c>, <c>bn1.running_mean</c>).</summary>
        public IReadOnlyDictionary<string, Tensor> StateDictionary()
        {
            ThrowIfDisposed();
            return Module.state_dict();
        }

        /// <summary>The trainable parameters by name.</summary>
        public IEnumerable<(string Name, TorchSharp.Modules.Parameter Parameter)> NamedParameters()
        {
            ThrowIfDisposed();
            return Module.named_parameters();
        }

        /// <summary>Writes the weights (see <see cref="TensorStore"/> for the format).</summary>
        /// <exception cref="InvalidOperationException">A weight is not finite (or beyond 1e10 in magnitude); the message names the tensor.</exception>
        public void SaveWeights(BinaryWriter writer)
        {
            ThrowIfDisposed();
            TensorStore.Write(writer, Module.state_dict().Select(kv => (kv.Key, kv.Value)));
        }

        /// <summary>Reads weights written by <see cref="SaveWeights"/>; names, element types and shapes must match this network
        /// exactly, values must be finite (and shift indices within their kernel), and nothing may follow the last tensor.</summary>
        /// <exception cref="FormatException">The stream is damaged or belongs to another architecture; the message names the tensor.</exception>
        public void LoadWeights(BinaryReader reader)
        {
            ThrowIfDisposed();
            Dictionary<string, Tensor> stored = ReadWeights(reader, Definition);
            try
            {
                LoadWeights(stored);
            }
            finally
            {
                foreach (Tensor t in stored.Values)
                    t.Dispose();
            }
        }

        /// <summary>Reads and checks the weights of a network of <paramref name="definition"/> without building it: every
        /// tensor's name, type and shape is compared with the definition before its values are allocated.</summary>
        internal static Dictionary<string, Tensor> ReadWeights(BinaryReader reader, NetworkDefinition definition)
            => TensorStore.Read(reader, DefinitionLimits.ExpectedTensors(definition));

        /// <summary>Copies tensors read by <see cref="ReadWeights"/> into the network (the caller keeps ownership of them).</summary>
        internal void LoadWeights(IReadOnlyDictionary<string, Tensor> stored)
        {
            ThrowIfDisposed();
            ResetCompiledForm();
            var target = Module.state_dict();
            foreach (string name in target.Keys.Except(stored.Keys))
                throw new FormatException($"The stored weights lack '{name}'.");
            foreach (string name in stored.Keys.Except(target.Keys))
                throw new FormatException($"The stored weights have '{name}', which the network does not.");
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            foreach (var (name, value) in target)
            {
                Tensor source = stored[name];
                if (!source.shape.SequenceEqual(value.shape) || source.dtype != value.dtype)
                    throw new FormatException($"Stored '{name}' has shape [{string.Join(",", source.shape)}] ({source.dtype}), the network expects [{string.Join(",", value.shape)}] ({value.dtype}).");
                value.copy_(source);
            }
        }

        /// <summary>A deep copy (same definition and weights, same device).</summary>
        public ClassifierNetwork Clone()
        {
            ThrowIfDisposed();
            var copy = Create(Definition, Device);
            using var noGrad = no_grad();
            var target = copy.Module.state_dict();
            foreach (var (name, value) in Module.state_dict())
                target[name].copy_(value);
            return copy;
        }

        /// <inheritdoc/>
        public void Dispose()
        {
            if (_disposed)
                return;
            ResetCompiledForm();
            _disposed = true;
            Module.Dispose();
        }

        private Tensor ReshapeInput(Tensor images)
        {
            ImageShape input = Definition.Input;
            if (images.dim() == 4 && images.shape[1] == input.Channels && images.shape[2] == input.Height && images.shape[3] == input.Width)
                return images;
            if (images.dim() == 2 && images.shape[1] == input.Size)
                return images.view(-1, input.Channels, input.Height, input.Width);
            throw new ArgumentException(
                $"Expected images of shape [N,{input.Channels},{input.Height},{input.Width}] or [N,{input.Size}], got [{string.Join(",", images.shape)}].",
                nameof(images));
        }

        private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
    }

    /// <summary>The engine a <see cref="ClassifierNetwork"/> scores with.</summary>
    public enum InferenceBackend
    {
        /// <summary>The compact runtime: shift + pointwise and sparse kernels that read only the stored weights, batch norm
        /// folded, ReLU and pooling fused; dense convolutions and fully connected layers on libtorch.</summary>
        Compact,

        /// <summary>The network's TorchSharp modules, layer by layer, as trained (the reference).</summary>
        LibTorch,
    }
}
