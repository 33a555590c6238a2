// Licensed under the MIT license.

namespace Microsoft.ML.Pruning.Training
{
    /// <summary>The optimizer used to train a network.</summary>
    public enum OptimizerKind
    {
        /// <summary>Stochastic gradient descent with momentum (optionally Nesterov).</summary>
        Sgd,

        /// <summary>Adam (Kingma and Ba); weight decay is added to the gradient (L2), as torch.optim.Adam does.</summary>
        Adam,
    }

    /// <summary>How the learning rate changes over training.</summary>
    public enum LearningRateSchedule
    {
        /// <summary>Constant learning rate.</summary>
        Constant,

        /// <summary>Multiplied by a factor every fixed number of epochs.</summary>
        Step,

        /// <summary>Cosine annealing to zero over the whole run, updated every step.</summary>
        Cosine,
    }

    /// <summary>Where tensors live during training and scoring.</summary>
    public enum ComputeDevice
    {
        /// <summary>The CPU.</summary>
        Cpu,

        /// <summary>The first CUDA GPU; the application must reference a CUDA build of libtorch.</summary>
        Cuda,
    }
}
