// Checks that Kiln's .proto files are wire-compatible with the upstream REAPI,
// ByteStream, longrunning and google.rpc definitions. The oracle is Debian's
// bazel-bootstrap-source package: an independent 2021 copy of the upstream
// files. For every message, field, enum value and RPC the two share, the
// name, number, type and label must be identical.
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <google/protobuf/compiler/importer.h>
#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;
using google::protobuf::compiler::DiskSourceTree;
using google::protobuf::compiler::Importer;
using google::protobuf::compiler::MultiFileErrorCollector;

constexpr char kOracleRoot[] = "/usr/src/bazel-bootstrap/third_party";

const std::vector<std::string> kFiles = {
    "build/bazel/remote/execution/v2/remote_execution.proto",
    "build/bazel/semver/semver.proto",
    "google/bytestream/bytestream.proto",
    "google/longrunning/operations.proto",
    "google/rpc/status.proto",
    "google/rpc/code.proto",
    "google/rpc/error_details.proto",
};

class FailOnError : public MultiFileErrorCollector {
 public:
  void AddError(const std::string& file, int line, int column,
                const std::string& message) override {
    ADD_FAILURE() << file << ":" << line << ":" << column << ": " << message;
  }
};

// A parsed set of .proto files, rooted at a list of include directories.
struct ProtoSet {
  explicit ProtoSet(const std::vector<std::string>& roots) {
    for (const std::string& root : roots) tree.MapPath("", root);
    importer = std::make_unique<Importer>(&tree, &errors);
  }
  const FileDescriptor* Load(const std::string& file) { return importer->Import(file); }
  DiskSourceTree tree;
  FailOnError errors;
  std::unique_ptr<Importer> importer;
};

std::string TypeOf(const FieldDescriptor* f) {
  std::string type = f->type_name();
  if (f->message_type()) absl::StrAppend(&type, " ", f->message_type()->full_name());
  if (f->enum_type()) absl::StrAppend(&type, " ", f->enum_type()->full_name());
  return type;
}

void CompareEnums(const EnumDescriptor* oracle, const EnumDescriptor* kiln, int* compared) {
  for (int i = 0; i < oracle->value_count(); ++i) {
    const auto* want = oracle->value(i);
    const auto* got = kiln->FindValueByName(want->name());
    ASSERT_NE(got, nullptr) << "Kiln's enum " << kiln->full_name() << " lacks " << want->name();
    EXPECT_EQ(got->number(), want->number()) << want->full_name();
    ++*compared;
  }
}

// Fields upstream renamed after the 2021 oracle was taken. A rename keeps the
// wire format (same number, type and label, all still checked); the current
// name is pinned in CurrentUpstreamAdditionsArePresent.
const std::map<std::string, std::string> kUpstreamRenames = {
    {"build.bazel.remote.execution.v2.CacheCapabilities.digest_function", "digest_functions"},
};

std::string ExpectedName(const FieldDescriptor* oracle_field) {
  auto renamed = kUpstreamRenames.find(oracle_field->full_name());
  return renamed == kUpstreamRenames.end() ? oracle_field->name() : renamed->second;
}

void CompareMessages(const Descriptor* oracle, const Descriptor* kiln, int* compared) {
  for (int i = 0; i < oracle->field_count(); ++i) {
    const FieldDescriptor* want = oracle->field(i);
    const FieldDescriptor* by_number = kiln->FindFieldByNumber(want->number());
    const FieldDescriptor* by_name = kiln->FindFieldByName(ExpectedName(want));
    ASSERT_NE(by_number, nullptr) << want->full_name() << " (#" << want->number()
                                  << ") is missing from Kiln's " << kiln->full_name();
    EXPECT_EQ(by_number, by_name) << want->full_name() << " has another number in Kiln";
    EXPECT_EQ(by_number->name(), ExpectedName(want)) << "field #" << want->number() << " of "
                                               << kiln->full_name();
    EXPECT_EQ(TypeOf(by_number), TypeOf(want)) << want->full_name();
    EXPECT_EQ(by_number->label(), want->label()) << want->full_name();
    EXPECT_EQ(by_number->is_map(), want->is_map()) << want->full_name();
    const auto* want_oneof = want->real_containing_oneof();
    const auto* got_oneof = by_number->real_containing_oneof();
    EXPECT_EQ(want_oneof ? want_oneof->name() : "", got_oneof ? got_oneof->name() : "")
        << want->full_name();
    ++*compared;
  }
  for (int i = 0; i < oracle->nested_type_count(); ++i) {
    const Descriptor* nested = oracle->nested_type(i);
    const Descriptor* mine = kiln->FindNestedTypeByName(nested->name());
    ASSERT_NE(mine, nullptr) << nested->full_name() << " is missing from Kiln";
    CompareMessages(nested, mine, compared);
  }
  for (int i = 0; i < oracle->enum_type_count(); ++i) {
    const EnumDescriptor* want = oracle->enum_type(i);
    const EnumDescriptor* mine = kiln->FindEnumTypeByName(want->name());
    ASSERT_NE(mine, nullptr) << want->full_name() << " is missing from Kiln";
    CompareEnums(want, mine, compared);
  }
}

class ProtoCompatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(kOracleRoot))
        << kOracleRoot << " is missing: install Debian's bazel-bootstrap-source (dev.sh does)";
  }
  ProtoSet kiln_{{KILN_PROTO_DIR, PROTOBUF_INCLUDE_DIR}};
  ProtoSet oracle_{{absl::StrCat(kOracleRoot, "/remoteapis"),
                    absl::StrCat(kOracleRoot, "/googleapis"), PROTOBUF_INCLUDE_DIR}};
};

TEST_F(ProtoCompatTest, EverySharedMessageFieldAndEnumIsIdentical) {
  int compared = 0;
  for (const std::string& file : kFiles) {
    const FileDescriptor* want = oracle_.Load(file);
    const FileDescriptor* got = kiln_.Load(file);
    ASSERT_NE(want, nullptr) << file;
    ASSERT_NE(got, nullptr) << file;
    EXPECT_EQ(got->package(), want->package()) << file;
    for (int i = 0; i < want->message_type_count(); ++i) {
      const Descriptor* oracle_message = want->message_type(i);
      const Descriptor* kiln_message = got->FindMessageTypeByName(oracle_message->name());
      ASSERT_NE(kiln_message, nullptr) << oracle_message->full_name() << " is missing from Kiln";
      CompareMessages(oracle_message, kiln_message, &compared);
    }
    for (int i = 0; i < want->enum_type_count(); ++i) {
      const EnumDescriptor* mine = got->FindEnumTypeByName(want->enum_type(i)->name());
      ASSERT_NE(mine, nullptr) << want->enum_type(i)->full_name();
      CompareEnums(want->enum_type(i), mine, &compared);
    }
  }
  // Guards against a vacuous pass (e.g. files that parse to nothing).
  EXPECT_GT(compared, 200);
}

TEST_F(ProtoCompatTest, EveryServiceMethodHasTheSameSignature) {
  int compared = 0;
  for (const std::string& file : kFiles) {
    const FileDescriptor* want = oracle_.Load(file);
    const FileDescriptor* got = kiln_.Load(file);
    ASSERT_NE(want, nullptr);
    ASSERT_NE(got, nullptr);
    for (int s = 0; s < want->service_count(); ++s) {
      const auto* oracle_service = want->service(s);
      const auto* kiln_service = got->FindServiceByName(oracle_service->name());
      ASSERT_NE(kiln_service, nullptr) << oracle_service->full_name();
      for (int m = 0; m < oracle_service->method_count(); ++m) {
        const auto* w = oracle_service->method(m);
        const auto* g = kiln_service->FindMethodByName(w->name());
        ASSERT_NE(g, nullptr) << w->full_name();
        EXPECT_EQ(g->input_type()->full_name(), w->input_type()->full_name()) << w->full_name();
        EXPECT_EQ(g->output_type()->full_name(), w->output_type()->full_name()) << w->full_name();
        EXPECT_EQ(g->client_streaming(), w->client_streaming()) << w->full_name();
        EXPECT_EQ(g->server_streaming(), w->server_streaming()) << w->full_name();
        ++compared;
      }
    }
  }
  EXPECT_GE(compared, 16);
}

// The newer fields the issue names exist with upstream's current numbers
// (the 2021 oracle predates them, so they are pinned here by hand).
TEST_F(ProtoCompatTest, CurrentUpstreamAdditionsArePresent) {
  ASSERT_NE(kiln_.Load(kFiles[0]), nullptr);
  const auto* pool = kiln_.importer->pool();
  auto number = [&](const std::string& message, const std::string& field) {
    const Descriptor* d = pool->FindMessageTypeByName(message);
    if (d == nullptr) return -1;
    const FieldDescriptor* f = d->FindFieldByName(field);
    return f == nullptr ? -1 : f->number();
  };
  const std::string p = "build.bazel.remote.execution.v2.";
  EXPECT_EQ(number(p + "CacheCapabilities", "digest_functions"), 1);
  EXPECT_EQ(number(p + "CacheCapabilities", "supported_compressors"), 6);
  EXPECT_EQ(number(p + "CacheCapabilities", "supported_batch_update_compressors"), 7);
  EXPECT_EQ(number(p + "FindMissingBlobsRequest", "digest_function"), 3);
  EXPECT_EQ(number(p + "BatchUpdateBlobsRequest", "digest_function"), 5);
  EXPECT_EQ(number(p + "BatchUpdateBlobsRequest.Request", "compressor"), 3);
  EXPECT_EQ(number(p + "BatchReadBlobsRequest", "acceptable_compressors"), 3);
  EXPECT_EQ(number(p + "BatchReadBlobsRequest", "digest_function"), 4);
  EXPECT_EQ(number(p + "BatchReadBlobsResponse.Response", "compressor"), 4);
  EXPECT_EQ(number(p + "GetTreeRequest", "digest_function"), 5);
  EXPECT_EQ(number(p + "ExecuteRequest", "digest_function"), 9);
  EXPECT_EQ(number(p + "ExecuteRequest", "inline_stdout"), 10);
  EXPECT_EQ(number(p + "GetActionResultRequest", "digest_function"), 6);
  EXPECT_EQ(number(p + "UpdateActionResultRequest", "digest_function"), 5);
  EXPECT_EQ(number(p + "ExecuteOperationMetadata", "stdout_stream_name"), 3);
  EXPECT_EQ(number(p + "ExecuteOperationMetadata", "digest_function"), 6);
  EXPECT_EQ(number(p + "ExecutionCapabilities", "digest_functions"), 5);
  EXPECT_EQ(number(p + "Command", "output_paths"), 7);
  EXPECT_EQ(number(p + "FileNode", "node_properties"), 6);
  EXPECT_EQ(number(p + "ExecutedActionMetadata", "virtual_execution_duration"), 12);
  // v2.4 to v2.12 (issue 11: newer REAPI).
  EXPECT_EQ(number(p + "OutputDirectory", "is_topologically_sorted"), 4);
  EXPECT_EQ(number(p + "OutputDirectory", "root_directory_digest"), 5);
  EXPECT_EQ(number(p + "Command", "output_directory_format"), 9);
  EXPECT_EQ(number(p + "ExecuteOperationMetadata", "partial_execution_metadata"), 5);
  EXPECT_EQ(number(p + "ExecuteRequest", "inline_stderr"), 11);
  EXPECT_EQ(number(p + "ExecuteRequest", "inline_output_files"), 12);
  EXPECT_EQ(number(p + "CacheCapabilities", "max_cas_blob_size_bytes"), 8);
  auto value = [&](const std::string& enum_name, const std::string& name) {
    const EnumDescriptor* e = pool->FindEnumTypeByName(enum_name);
    if (e == nullptr || e->FindValueByName(name) == nullptr) return -1;
    return e->FindValueByName(name)->number();
  };
  EXPECT_EQ(value(p + "DigestFunction.Value", "SHA256TREE"), 8);
  EXPECT_EQ(value(p + "DigestFunction.Value", "BLAKE3"), 9);
  EXPECT_EQ(value(p + "DigestFunction.Value", "GITSHA1"), 10);
  EXPECT_EQ(value(p + "Compressor.Value", "BROTLI"), 3);
  EXPECT_EQ(value(p + "Command.OutputDirectoryFormat", "TREE_ONLY"), 0);
  EXPECT_EQ(value(p + "Command.OutputDirectoryFormat", "DIRECTORY_ONLY"), 1);
  EXPECT_EQ(value(p + "Command.OutputDirectoryFormat", "TREE_AND_DIRECTORY"), 2);
}

}  // namespace
