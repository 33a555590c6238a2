// Licensed under the MIT license.

using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Networks.Layers
{
    /// <summary>Per-channel <c>(x - mean) / std</c> with fixed statistics (stored in the definition, not as weights).</summary>
    internal sealed class NormalizeModule : nn.Module<Tensor, Tensor>
    {
        private readonly Tensor _mean;
        private readonly Tensor _inverseStd;

        public NormalizeModule(string name, float[] mean, float[] std) : base(name)
        {
            var inverse = new float[std.Length];
            for (int i = 0; i < std.Length; i++)
                inverse[i] = 1f / std[i];
            _mean = tensor(mean).reshape(1, mean.Length, 1, 1);
            _inverseStd = tensor(inverse).reshape(1, std.Length, 1, 1);
            register_buffer("mean", _mean, persistent: false);
            register_buffer("inverse_std", _inverseStd, persistent: false);
        }

        public override Tensor forward(Tensor input) => (input - _mean).mul_(_inverseStd);
    }

    /// <summary><c>relu(body(x) + shortcut(x))</c>; the shortcut is the identity when absent.</summary>
    internal sealed class ResidualBlockModule : nn.Module<Tensor, Tensor>
    {
        private readonly nn.Module<Tensor, Tensor> body;
        private readonly nn.Module<Tensor, Tensor>? shortcut;

        public ResidualBlockModule(string name, nn.Module<Tensor, Tensor> body, nn.Module<Tensor, Tensor>? shortcut) : base(name)
        {
            this.body = body;
            this.shortcut = shortcut;
            RegisterComponents();
        }

        public override Tensor forward(Tensor input)
        {
            Tensor residual = body.call(input);
            Tensor sum = shortcut is null ? residual.add_(input) : residual.add_(shortcut.call(input));
            return sum.relu_();
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                body.Dispose();
                shortcut?.Dispose();
            }
            base.Dispose(disposing);
        }
    }

    /// <summary>Mean over the spatial axes: [N,C,H,W] to [N,C].</summary>
    internal sealed class GlobalAvgPoolModule : nn.Module<Tensor, Tensor>
    {
        public GlobalAvgPoolModule(string name) : base(name)
        {
        }

        public override Tensor forward(Tensor input) => input.mean(new long[] { 2, 3 });
    }
}
