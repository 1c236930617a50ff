// edgeseq_tvm_run: run an edgeseq TVM artifact (a Relax VM executable in a shared library) on a
// Linux device, with the TVM runtime (libtvm_runtime.so + libtvm_ffi.so) and nothing else.
//
//   edgeseq_tvm_run MODEL.so FUNCTION OUT_DIR ARG... [--repeat N]
//
// Each ARG is FILE:D0,D1,...[:DTYPE] -- a raw little-endian tensor, its shape and its element type
// (f32 when omitted; f64, i8, i16, i32, i64, u8 for integer programs). The function ("main",
// "stream", "main_int", "stream_int") is called once per repeat; the outputs of the last call are
// written to OUT_DIR/out<i>.bin and listed on stdout as "out<i> D0,D1,... DTYPE". With --repeat
// N > 1 the median wall time per call is printed as "median_us <value>".
//
// Build (edgeseq does this on demand, see edgeseq/export/tvm/runtime_arm.py):
//   aarch64-linux-gnu-g++ -std=c++17 -O2 edgeseq_tvm_run.cc -I<tvm_ffi/include> -I<tvm/include>
//       -L<aarch64 runtime dir> -Wl,--no-as-needed -ltvm_runtime -ltvm_ffi -o edgeseq_tvm_run
// libtvm_runtime must be linked (not only dlopen'ed): it registers the module loaders and the VM.
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace tvm::ffi;

namespace {

struct CPUAlloc {
  void AllocData(DLTensor* t) {
    size_t n = GetDataSize(*t);
    t->data = std::aligned_alloc(64, (n + 63) / 64 * 64 + 64);
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

int Fail(const std::string& msg) {
  std::fprintf(stderr, "edgeseq_tvm_run: %s\n", msg.c_str());
  return 2;
}

struct DType {
  const char* name;
  DLDataType dl;
};

const DType kDTypes[] = {
    {"f32", {kDLFloat, 32, 1}}, {"f64", {kDLFloat, 64, 1}}, {"i8", {kDLInt, 8, 1}},  {"i16", {kDLInt, 16, 1}},
    {"i32", {kDLInt, 32, 1}},   {"i64", {kDLInt, 64, 1}},   {"u8", {kDLUInt, 8, 1}},
};

bool DTypeFromName(const std::string& name, DLDataType* out) {
  for (const DType& d : kDTypes) {
    if (name == d.name) {
      *out = d.dl;
      return true;
    }
  }
  return false;
}

std::string DTypeName(DLDataType t) {
  for (const DType& d : kDTypes) {
    if (d.dl.code == t.code && d.dl.bits == t.bits && d.dl.lanes == t.lanes) return d.name;
  }
  return "unknown";
}

bool ParseArg(const std::string& arg, std::string* path, std::vector<int64_t>* shape, DLDataType* dtype) {
  std::string rest = arg;
  *dtype = DLDataType{kDLFloat, 32, 1};
  size_t colon = rest.rfind(':');
  if (colon == std::string::npos) return false;
  if (DTypeFromName(rest.substr(colon + 1), dtype)) {
    rest = rest.substr(0, colon);
    colon = rest.rfind(':');
    if (colon == std::string::npos) return false;
  }
  *path = rest.substr(0, colon);
  std::string dims = rest.substr(colon + 1);
  size_t pos = 0;
  while (pos <= dims.size()) {
    size_t comma = dims.find(',', pos);
    if (comma == std::string::npos) comma = dims.size();
    if (comma == pos) return false;
    shape->push_back(std::atoll(dims.substr(pos, comma - pos).c_str()));
    pos = comma + 1;
  }
  return !shape->empty();
}

bool WriteTensor(const std::string& path, const Tensor& t) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  size_t n = GetDataSize(static_cast<size_t>(t.numel()), t.dtype());
  bool ok = std::fwrite(t.data_ptr(), 1, n, f) == n;
  return std::fclose(f) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return Fail("usage: edgeseq_tvm_run MODEL.so FUNCTION OUT_DIR FILE:D0,D1,... [--repeat N]");
  std::string model = argv[1], function = argv[2], out_dir = argv[3];
  int repeat = 1;
  std::vector<Tensor> inputs;
  DLDevice cpu{kDLCPU, 0};
  for (int i = 4; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--repeat" && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
      continue;
    }
    std::string path;
    std::vector<int64_t> shape;
    DLDataType dtype;
    if (!ParseArg(a, &path, &shape, &dtype)) {
      return Fail("bad argument '" + a + "' (expected FILE:D0,D1,...[:DTYPE])");
    }
    Tensor t = Tensor::FromNDAlloc(CPUAlloc(), ShapeView(shape.data(), shape.size()), dtype, cpu);
    size_t n = GetDataSize(static_cast<size_t>(t.numel()), dtype);
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return Fail("cannot open " + path);
    size_t got = std::fread(t.data_ptr(), 1, n, f);
    std::fclose(f);
    if (got != n) return Fail("short read from " + path);
    inputs.push_back(t);
  }
  try {
    Module lib = Module::LoadFromFile(model);
    Optional<Function> load = lib->GetFunction("vm_load_executable");
    if (!load.has_value()) return Fail(model + " is not a Relax VM executable");
    Module vm = (*load)().cast<Module>();
    // device type kDLCPU, id 0, pooled allocator (2)
    (*vm->GetFunction("vm_initialization"))(static_cast<int>(kDLCPU), 0, 2);
    Optional<Function> fn = vm->GetFunction(function);
    if (!fn.has_value()) return Fail("the executable has no function '" + function + "'");
    std::vector<AnyView> args(inputs.begin(), inputs.end());
    Any result;
    std::vector<double> times;
    for (int r = 0; r < repeat; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      fn->CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
      auto t1 = std::chrono::steady_clock::now();
      times.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    std::vector<Tensor> outs;
    if (auto t = result.as<Tensor>()) {
      outs.push_back(*t);
    } else if (auto arr = result.as<Array<Any>>()) {
      for (const Any& v : *arr) outs.push_back(v.cast<Tensor>());
    } else {
      return Fail("unexpected result type " + result.GetTypeKey());
    }
    for (size_t i = 0; i < outs.size(); ++i) {
      std::string path = out_dir + "/out" + std::to_string(i) + ".bin";
      if (!WriteTensor(path, outs[i])) return Fail("cannot write " + path);
      std::printf("out%zu ", i);
      for (int d = 0; d < outs[i].ndim(); ++d) {
        std::printf(d ? ",%lld" : "%lld", static_cast<long long>(outs[i].shape()[d]));
      }
      std::printf(" %s\n", DTypeName(outs[i].dtype()).c_str());
    }
    if (repeat > 1) {
      std::sort(times.begin(), times.end());
      std::printf("median_us %.3f\n", times[times.size() / 2]);
    }
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
  return 0;
}
