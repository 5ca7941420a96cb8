"""A user's energy network as a head of the latent program: the drop-in path (docs/PORTING.md).

``ModuleEnergy(net, dims, output=..., energy_form=..., input=...)`` wraps the module a researcher already has (the
LEBM repository's ``_netE``, Cui et al.'s ``energy_model``, a plain ``nn.Sequential``) as an energy head:

    E(z) = sign * sum_k form(s_k),   s = net(z reshaped as ``input``) flattened per chain to [B, n_out]

with sign = +1 for ``output="energy"`` (Pang et al.'s networks) and -1 for ``output="log_density"`` (Cui et al.'s),
and ``form`` the LEBM code's ``e_energy_form``: identity s, tanh -> tanh(-s), sigmoid -> sigmoid(s), softplus ->
softplus(s) (train_svhn.py's ``energy(score)``, verbatim, including the minus sign of its tanh form). Its forward
calls the user's module itself, so the reference sampler runs exactly the user's eager code.

For the fused kernels the module's structure is read once, at construction, by running it on a probe input under
a torch-function mode that records every operation (and module hooks that treat nn.Linear as one step): the data
path from the input to the output must be Linear layers (with or without bias, spectrally normalised by
``torch.nn.utils.spectral_norm`` hooks or ``torch.nn.utils.parametrizations.spectral_norm``, or weight-normalised),
elementwise activations (LeakyReLU with any slope, ReLU, GELU exact and tanh-approximate, SiLU, Tanh, ELU, Softplus
with the default threshold, Sigmoid; as modules or as functions; x * sigmoid(x) as SiLU), reshapes that keep each chain's values in order
(view, reshape, squeeze, unsqueeze, flatten, contiguous) and, for ``input="layers"``, the concatenation of the
layers in order. Anything else leaves ``fused_reason`` set to a message that names the first unsupported layer or
operation and where it is; the prior then runs on the reference sampler (or the generic engine, hebm_ext.langevin).

The packed program reads the live parameters (sampling/program.py repacks when their versions change). Spectral
norm enters as the current W / sigma, sigma = u^T W v with the stored u and v: no power iteration. The papers'
eager loop in train mode does one power iteration per forward (so per Langevin step); docs/PORTING.md gives the
size of that difference.
"""
from __future__ import annotations

import math
import os
import traceback
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.overrides import TorchFunctionMode, resolve_name

from .energy import no_power_iteration

OUTPUTS = ("energy", "log_density")
ENERGY_FORMS = ("identity", "tanh", "sigmoid", "softplus")
_LN2 = math.log(2.0)


@dataclass
class Act:
    """An elementwise map x = post * phi(pre * h) + shift, phi one of the kernels' kinds (csrc/core/activations.h;
    "softplus" there is softplus0 = softplus - log(2)/beta, hence shift = log(2)/beta). ``param``: the slope,
    alpha or beta; ``where``: the place in the module, for messages."""
    kind: str
    param: float | None = None
    pre: float = 1.0
    post: float = 1.0
    shift: float = 0.0
    where: str = ""
    name: str = ""  # the PyTorch activation it came from


@dataclass
class Layer:
    """One linear map and the activation after it (None: none). ``linear`` None is the identity map of ``width``
    units (inserted to hold an activation that follows another activation, or the energy form)."""
    linear: nn.Linear | None
    width: int
    act: Act | None = None
    where: str = ""


def act_of_module_kind(name: str, **kw) -> Act:
    """The Act for a PyTorch activation by name: leaky_relu(slope), relu, gelu(approximate), silu, tanh, elu(alpha),
    softplus(beta), sigmoid. Raises ValueError for an unsupported setting."""
    where = kw.pop("where", "")
    act = _act_of(name, kw, where)
    act.name = name
    return act


def _act_of(name: str, kw: dict, where: str) -> Act:
    if name == "leaky_relu":
        return Act("lrelu", float(kw["slope"]), where=where)
    if name == "relu":
        return Act("lrelu", 0.0, where=where)  # relu = lrelu with slope 0, derivative at 0 included
    if name == "gelu":
        approx = kw.get("approximate", "none")
        if approx not in ("none", "tanh"):
            raise ValueError(f"GELU(approximate={approx!r}) (the kernels have 'none' and 'tanh')")
        return Act("gelu" if approx == "none" else "gelu_tanh", where=where)
    if name == "silu":
        return Act("silu", where=where)
    if name == "tanh":
        return Act("tanh", where=where)
    if name == "elu":
        return Act("elu", float(kw["alpha"]), where=where)
    if name == "softplus":
        beta, threshold = float(kw["beta"]), float(kw["threshold"])
        if threshold != 20.0:
            raise ValueError(f"Softplus(threshold={threshold:g}) (the kernels have PyTorch's default threshold 20)")
        if not beta > 0:
            raise ValueError(f"Softplus(beta={beta:g}) (beta must be positive)")
        return Act("softplus", beta, shift=_LN2 / beta, where=where)
    if name == "sigmoid":  # sigmoid(h) = 1/2 + tanh(h/2)/2: no kind of its own (sigmoid(0) != 0)
        return Act("tanh", pre=0.5, post=0.5, shift=0.5, where=where)
    raise ValueError(f"activation {name!r}")


def energy_form_act(form: str) -> Act | None:
    """The LEBM code's e_energy_form as an elementwise map of the network's output (None for identity)."""
    if form == "identity":
        return None
    if form == "tanh":  # train_svhn.py: F.tanh(-score)
        return Act("tanh", pre=-1.0, where="energy_form='tanh'")
    if form == "sigmoid":
        return act_of_module_kind("sigmoid", where="energy_form='sigmoid'")
    return act_of_module_kind("softplus", beta=1.0, threshold=20.0, where="energy_form='softplus'")


def effective_weight(lin: nn.Linear) -> torch.Tensor:
    """The weight a forward would use, read without side effects: W / sigma with the stored u, v (no power
    iteration) for spectral norm as hook or parametrization; g v / ||v|| for weight norm."""
    from torch.nn.utils.spectral_norm import SpectralNorm  # noqa: PLC0415
    from torch.nn.utils.weight_norm import WeightNorm  # noqa: PLC0415

    with torch.no_grad():
        for hook in lin._forward_pre_hooks.values():
            if isinstance(hook, SpectralNorm):
                return hook.compute_weight(lin, do_power_iteration=False)
            if isinstance(hook, WeightNorm):
                return hook.compute_weight(lin)
        if parametrize.is_parametrized(lin):
            with no_power_iteration(lin):
                return lin.weight.detach()
        return lin.weight.detach()


def effective_bias(lin: nn.Linear):
    with torch.no_grad():
        if lin.bias is None:
            return None
        if parametrize.is_parametrized(lin, "bias"):
            with no_power_iteration(lin):
                return lin.bias.detach()
        return lin.bias.detach()


def _linear_problem(lin: nn.Linear) -> str | None:
    """Why this nn.Linear cannot be packed (hooks that change its forward), or None."""
    from torch.nn.utils.spectral_norm import SpectralNorm  # noqa: PLC0415
    from torch.nn.utils.weight_norm import WeightNorm  # noqa: PLC0415

    if type(lin).forward is not nn.Linear.forward:
        return f"a {type(lin).__name__} with its own forward"
    for hook in lin._forward_pre_hooks.values():
        if not isinstance(hook, (SpectralNorm, WeightNorm)):
            return f"a forward pre-hook ({getattr(hook, '__name__', type(hook).__name__)})"
    if lin._forward_hooks:
        return "a forward hook"
    return None


# ---------------------------------------------------------------------------------------------------------------
# The recorder: the module's forward on a probe input, one node per operation on data derived from the input.

def _tensor_methods(*names):
    return {getattr(torch.Tensor, n) for n in names if hasattr(torch.Tensor, n)}


_RESHAPES = _tensor_methods("view", "reshape", "squeeze", "unsqueeze", "flatten", "unflatten", "contiguous",
                            "view_as", "reshape_as") | {torch.reshape, torch.squeeze, torch.unsqueeze, torch.flatten}
_SAME = _tensor_methods("to", "float", "double", "type_as", "type")  # no-ops only when they return their input
_MULS = _tensor_methods("mul", "__mul__", "__rmul__") | {torch.mul, torch.multiply}
_CATS = {torch.cat, torch.concat, getattr(torch, "concatenate", torch.cat)}

# function -> (activation name, {parameter: (position after the input, default)})
_ACT_FUNCS = {}
for _f in (F.leaky_relu, getattr(F, "leaky_relu_", None), torch._C._nn.leaky_relu,
           getattr(torch._C._nn, "leaky_relu_", None)):
    if _f is not None:
        _ACT_FUNCS[_f] = ("leaky_relu", {"negative_slope": (0, 0.01)})
for _f in (F.relu, getattr(F, "relu_", None), torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_):
    if _f is not None:
        _ACT_FUNCS[_f] = ("relu", {})
_ACT_FUNCS[F.gelu] = ("gelu", {"approximate": (0, "none")})
_ACT_FUNCS[F.silu] = ("silu", {})
for _f in (F.tanh, torch.tanh, torch.tanh_, torch.Tensor.tanh, torch.Tensor.tanh_):
    _ACT_FUNCS[_f] = ("tanh", {})
for _f in (F.elu, getattr(F, "elu_", None), torch._C._nn.elu, getattr(torch._C._nn, "elu_", None)):
    if _f is not None:
        _ACT_FUNCS[_f] = ("elu", {"alpha": (0, 1.0)})
_ACT_FUNCS[F.softplus] = ("softplus", {"beta": (0, 1.0), "threshold": (1, 20.0)})
for _f in (F.sigmoid, torch.sigmoid, torch.sigmoid_, torch.Tensor.sigmoid, torch.Tensor.sigmoid_):
    _ACT_FUNCS[_f] = ("sigmoid", {})


class Unsupported(Exception):
    """The module's forward does something the fused kernels cannot run; str(e) says what and where."""


@dataclass
class _Node:
    kind: str          # "input", "linear", "act", "identity"
    parent: int        # index of the node it reads (-1 for the input)
    shape: tuple
    module: nn.Module | None = None
    act: Act | None = None
    where: str = ""


def _source_line(outer: int) -> str:
    """" [at file:line]" of the innermost frame of the module's own code (below the ``outer`` frames of the
    conversion's caller; torch's files skipped), or "" when the operation is in torch's code only."""
    here = os.path.dirname(os.path.abspath(torch.__file__))
    for fr in reversed(traceback.extract_stack()[outer:]):
        f = os.path.abspath(fr.filename)
        if not f.startswith(here) and f != os.path.abspath(__file__):
            return f" [at {os.path.basename(f)}:{fr.lineno}]"
    return ""


class _Recorder(TorchFunctionMode):
    def __init__(self, net: nn.Module, inputs: list, batch: int, cat_input: bool):
        super().__init__()
        self.names = {id(m): (n or f"{type(m).__name__}.forward") for n, m in net.named_modules()}
        self.nodes: list[_Node] = []
        self.of: dict[int, int] = {}   # id(tensor) -> node index
        self.keep: list = []           # keeps recorded tensors alive (their ids stay unique)
        self.stack: list = []          # modules being run
        self.in_linear = 0
        self.batch = batch
        self.inputs = inputs
        self.cat_input = cat_input
        self.outer = len(traceback.extract_stack()) - 1  # frames of the conversion's callers (and this one's)
        if not cat_input:
            self._mark(inputs[0], _Node("input", -1, tuple(inputs[0].shape)))
        else:
            for x in inputs:  # the layers: only their concatenation in order is the latent
                self.keep.append(x)

    # -- bookkeeping
    def _mark(self, t, node: _Node) -> int:
        self.nodes.append(node)
        self.of[id(t)] = len(self.nodes) - 1
        self.keep.append(t)
        return len(self.nodes) - 1

    def node_of(self, t):
        return self.of.get(id(t)) if torch.is_tensor(t) else None

    def where(self) -> str:
        return self.where_of(self.stack[-1]) if self.stack else "the forward"

    def fail(self, what: str):
        raise Unsupported(f"{self.where()}: {what}{_source_line(self.outer)}")

    # -- module hooks (global, installed only while recording)
    def pre_hook(self, module, args):
        self.stack.append(module)
        if self.in_linear == 0 and isinstance(module, nn.Linear):  # parametrize makes a subclass: isinstance
            problem = _linear_problem(module)
            if problem:
                self.fail(f"an nn.Linear with {problem} is not supported")
            x = args[0] if args else None
            if self.node_of(x) is None:
                self.fail("an nn.Linear whose input is not computed from the latent by the supported operations")
            self.linear_in = x
        if isinstance(module, nn.Linear) or self.in_linear:
            self.in_linear += 1

    def post_hook(self, module, args, out):
        self.stack.pop()
        if self.in_linear:
            self.in_linear -= 1
            if self.in_linear == 0:
                x = self.linear_in
                per = x.numel() // self.batch if x.dim() else 0
                if x.dim() < 1 or x.shape[0] != self.batch or x.shape[-1] != module.in_features or \
                        per != module.in_features:
                    self.fail(f"an nn.Linear({module.in_features}, {module.out_features}) applied to a tensor of "
                              f"shape {tuple(x.shape)} (the kernels apply Linear layers to [B, in] per chain)")
                self._mark(out, _Node("linear", self.node_of(x), tuple(out.shape), module=module,
                                      where=self.where_of(module)))

    def where_of(self, module):
        name = self.names.get(id(module))
        if name is None:
            return f"a {type(module).__name__} created in the forward"
        return name if name.endswith(".forward") else f"{name} ({type(module).__name__})"

    # -- every torch function outside nn.Linear
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.in_linear:
            return out
        srcs = [a for a in _flat(args, kwargs) if self.node_of(a) is not None]
        name = _func_name(func)
        if func in _CATS and self.cat_input:
            parts = args[0] if args else kwargs.get("tensors")
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            if isinstance(parts, (list, tuple)) and len(parts) == len(self.inputs) and \
                    all(p is q for p, q in zip(parts, self.inputs)):
                if dim not in (1, -1):
                    self.fail(f"{name} of the layers along dim {dim} (the latent is their concatenation along dim 1)")
                self._mark(out, _Node("input", -1, tuple(out.shape)))
                return out
            if any(any(p is q for q in self.inputs) for p in (parts or [])):
                self.fail(f"{name} of the layers in another order or with other tensors (the latent is the "
                          "concatenation of the layers in the order of dims)")
        if not srcs:
            if self.cat_input and any(a is q for a in _flat(args, kwargs) for q in self.inputs) and \
                    torch.is_tensor(out):
                self.fail(f"{name} on one layer of the latent (the kernels read the concatenation of the layers)")
            return out  # metadata (shapes), constants
        if not torch.is_tensor(out):
            return out  # x.shape, x.size(1), x.dim(): no data flows on; a later use of such a value fails below
        if func in _MULS and len(srcs) == 2:  # x * sigmoid(x): LEBM's Swish module, SiLU
            for x, sg in ((srcs[0], srcs[1]), (srcs[1], srcs[0])):
                ns = self.nodes[self.node_of(sg)]
                if ns.kind == "act" and ns.act.name == "sigmoid" and ns.parent == self.node_of(x):
                    self._mark(out, _Node("act", ns.parent, tuple(out.shape), act=Act("silu", where=self.where()),
                                          where=self.where()))
                    return out
        if len(srcs) > 1 or any(s is not srcs[0] for s in srcs):
            self.fail(f"{name} combines the latent's values with other values (the kernels run a chain of Linear "
                      "layers and elementwise activations)")
        x = srcs[0]
        if x is not (args[0] if args else None) and not (func in _ACT_FUNCS and kwargs.get("input") is x):
            self.fail(f"{name} with the latent's values in a position other than its input")
        parent = self.node_of(x)
        if func in _ACT_FUNCS:
            act_name, spec = _ACT_FUNCS[func]
            params = {}
            for p, (pos, default) in spec.items():
                params[p] = args[1 + pos] if len(args) > 1 + pos else kwargs.get(p, default)
            kw = {"slope": params.get("negative_slope"), **{k: v for k, v in params.items() if k != "negative_slope"}}
            try:
                act = act_of_module_kind(act_name, where=self.where(), **kw)
            except ValueError as e:
                self.fail(f"{e} is not supported")
            self._mark(out, _Node("act", parent, tuple(out.shape), act=act, where=self.where()))
            return out
        if func in _RESHAPES or (func in _SAME and out is x):
            if out.dim() < 1 or out.shape[0] != self.batch or out.numel() != x.numel():
                self.fail(f"{name} from shape {tuple(x.shape)} to {tuple(out.shape)} mixes the chains (a reshape "
                          "must keep the batch dimension first)")
            self._mark(out, _Node("identity", parent, tuple(out.shape), where=self.where()))
            return out
        self.fail(f"{name} is not supported by the fused kernels")


def _flat(args, kwargs):
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, (list, tuple)):
            yield from a
        else:
            yield a


def _func_name(func) -> str:
    try:
        return resolve_name(func) or getattr(func, "__name__", repr(func))
    except Exception:  # noqa: BLE001 - only a name for a message
        return getattr(func, "__name__", repr(func))


def _probe_batch(dims, net: nn.Module) -> int:
    """A probe batch size that no feature width equals (so a reshape that mixes chains cannot pass unnoticed)."""
    taken = set(dims)
    for m in net.modules():
        if isinstance(m, nn.Linear):
            taken |= {m.in_features, m.out_features}
    b = 3
    while b in taken:
        b += 1
    return b


def make_input(z: torch.Tensor, dims, input):
    """z [B, D] -> what the user's module takes: z itself ("flat"), z.view(B, *shape) (a per-chain shape such as
    (nz, 1, 1)), or the list of layers [B, d_l] ("layers")."""
    if input == "flat":
        return z
    if input == "layers":
        return list(z.split(list(dims), dim=1))
    return z.reshape(z.shape[0], *input)


def trace_layers(net: nn.Module, dims, input, n_out_hint=None) -> tuple[list[Layer], int]:
    """Read the data path of ``net`` on a probe: (the chain of layers, number of outputs per chain). Raises
    Unsupported naming the first operation the kernels cannot run."""
    p = next(iter(net.parameters()), None)
    if p is None:
        raise Unsupported("the module has no parameters (nothing to pack)")
    if not p.dtype.is_floating_point:
        raise Unsupported(f"the module's parameters are {p.dtype}")
    B = _probe_batch(dims, net)
    z = torch.zeros(B, sum(dims), dtype=p.dtype, device=p.device)
    inp = make_input(z, dims, input)
    inputs = inp if isinstance(inp, list) else [inp]
    rec = _Recorder(net, inputs, B, cat_input=isinstance(inp, list))
    flags = [(m, m.training) for m in net.modules()]
    net.eval()  # no power iteration, nothing of the user's state changes
    h1 = nn.modules.module.register_module_forward_pre_hook(rec.pre_hook)
    h2 = nn.modules.module.register_module_forward_hook(rec.post_hook)
    try:
        with torch.no_grad(), rec:
            out = net(inp)
    except Unsupported:
        raise
    except Exception as e:  # noqa: BLE001 - the user's forward failed on the probe: say so
        raise Unsupported(f"running the module on a probe input failed: {type(e).__name__}: {e}") from e
    finally:
        h1.remove()
        h2.remove()
        for m, f in flags:
            m.training = f
    idx = rec.node_of(out)
    if idx is None:
        raise Unsupported(f"the module's output ({type(out).__name__}"
                          f"{' of shape ' + str(tuple(out.shape)) if torch.is_tensor(out) else ''}) is not "
                          "computed from its input by the supported operations")
    if out.dim() < 1 or out.shape[0] != B:
        raise Unsupported(f"the module's output has shape {tuple(out.shape)} for {B} chains (expected the chains "
                          "first)")
    chain = []
    while idx >= 0:
        chain.append(rec.nodes[idx])
        idx = rec.nodes[idx].parent
    chain.reverse()  # input first
    layers: list[Layer] = []
    width = sum(dims)
    for node in chain:
        if node.kind == "linear":
            layers.append(Layer(node.module, node.module.out_features, None, node.where))
            width = node.module.out_features
        elif node.kind == "act":
            if not layers or layers[-1].act is not None:  # an activation first or after another: identity map
                layers.append(Layer(None, width, None, node.where))
            layers[-1].act = node.act
    if not any(l.linear is not None for l in layers):
        raise Unsupported("the module has no nn.Linear on its data path")
    n_out = out.numel() // B
    return layers, n_out


class ModuleEnergy(nn.Module):
    """A user's energy network as a head over the whole latent y [B, D] (module docstring).

    net: the user's module. dims: the latent layers' sizes (their sum D is the input size). output: "energy" or
    "log_density". energy_form: "identity" | "tanh" | "sigmoid" | "softplus" (LEBM's e_energy_form). input: "flat"
    (net takes [B, D]), a per-chain shape such as (nz, 1, 1) (net takes [B, nz, 1, 1], the LEBM code), or "layers"
    (net takes the list of layers [B, d_l], Cui et al.'s code).

    forward(z [B, D]) -> E [B].  layers: the packed chain (None when unsupported); fused_reason: why the fused
    kernels cannot run it (None when they can).
    """

    def __init__(self, net: nn.Module, dims, output: str = "energy", energy_form: str = "identity", input="flat"):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if energy_form not in ENERGY_FORMS:
            raise ValueError(f"energy_form must be one of {ENERGY_FORMS}, got {energy_form!r}")
        dims = [int(d) for d in dims]
        D = sum(dims)
        if input not in ("flat", "layers"):
            try:
                shape = tuple(int(s) for s in input)
            except TypeError as e:
                raise ValueError(f"input must be 'flat', 'layers' or a per-chain shape, got {input!r}") from e
            if math.prod(shape) != D:
                raise ValueError(f"input shape {shape} has {math.prod(shape)} values per chain but the latent has "
                                 f"D = {D} dims")
            input = shape
        self.net = net
        self.dims, self.in_dim = dims, D
        self.output, self.energy_form, self.input = output, energy_form, input
        self.sign = 1.0 if output == "energy" else -1.0
        self.layers, self.n_out, self.fused_reason = None, None, None
        try:
            layers, n_out = trace_layers(net, dims, input)
            form = energy_form_act(energy_form)
            if form is not None:
                if layers[-1].act is not None:
                    layers.append(Layer(None, layers[-1].width, None, form.where))
                layers[-1].act = form
            if layers[-1].width != n_out:
                raise Unsupported(f"the last layer has {layers[-1].width} outputs but the module returns {n_out} "
                                  "values per chain")
            self.layers, self.n_out = layers, n_out
        except Unsupported as e:
            self.fused_reason = str(e)

    @property
    def n_linears(self) -> int:
        """Linear layers of the packed program (the energy's output layer included)."""
        return len(self.layers) + (1 if self.layers[-1].act is not None else 0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.in_dim:
            raise ValueError(f"z must be [B, {self.in_dim}], got {tuple(z.shape)}")
        s = self.net(make_input(z, self.dims, self.input))
        if not torch.is_tensor(s) or s.dim() < 1 or s.shape[0] != z.shape[0]:
            raise ValueError(f"the module returned {tuple(s.shape) if torch.is_tensor(s) else type(s).__name__} "
                             f"for {z.shape[0]} chains (expected the chains first)")
        s = s.reshape(z.shape[0], -1)
        if self.energy_form == "tanh":
            s = torch.tanh(-s)
        elif self.energy_form == "sigmoid":
            s = torch.sigmoid(s)
        elif self.energy_form == "softplus":
            s = F.softplus(s)
        return self.sign * s.sum(1)

    def extra_repr(self) -> str:
        s = f"output={self.output!r}, energy_form={self.energy_form!r}, input={self.input!r}"
        return s + (", fused" if self.fused_reason is None else ", reference only")
