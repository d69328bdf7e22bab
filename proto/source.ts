// Turns .proto source text into a package definition for @grpc/grpc-js. The text comes from the
// file next to the loading module when running from source, and is inlined by the bundler
// (installers/bundle.ts, esbuild `define`) in dist/ bundles and single executables, which have no
// file to read (issue 7). One parse path in every mode: protobufjs parses the text with the
// loader's options, as protoLoader.loadSync would after reading the file.
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

export function packageDefinitionFromText(text: string, options: protoLoader.Options): protoLoader.PackageDefinition {
  const root = new protobuf.Root();
  protobuf.parse(text, root, options);
  root.resolveAll();
  return protoLoader.fromJSON(root.toJSON(), options);
}

