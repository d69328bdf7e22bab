// Turns .proto source text into a package definition for @grpc/grpc-js. The text comes from the
// file next to the loading module when running from source, and is inlined by the bundler
// (installers/bundle.ts, esbuild `define`) in dist/ bundles and single executables, which have no
// file to read (issue 7). One parse path in every mode: protobufjs parses the text with the
// loader's options, as protoLoader.loadSync would after reading the file.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

export function packageDefinitionFromText(text: string, options: protoLoader.Options): protoLoader.PackageDefinition {
  const root = new protobuf.Root();
  protobuf.parse(text, root, options);
  root.resolveAll();
  return protoLoader.fromJSON(root.toJSON(), options);
}


/** A service's client constructor (its `.service` is the server's definition) from proto text,
 *  looked up by its dotted name, e.g. `sepal.v1.AgentApi`. */
export function serviceFromText(text: string, options: protoLoader.Options, fullName: string): grpc.ServiceClientConstructor {
  let node: grpc.GrpcObject | grpc.ServiceClientConstructor | grpc.ProtobufTypeDefinition = grpc.loadPackageDefinition(packageDefinitionFromText(text, options));
  for (const part of fullName.split('.')) node = (node)[part] as typeof node;
  if (typeof node !== 'function') throw new TypeError(`${fullName} is not a service in this proto`);
  return node;
}
