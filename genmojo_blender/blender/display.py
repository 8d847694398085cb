"""Viewport/render display of imported Gaussians as coloured points.

A mesh made only of vertices is invisible in Object Mode, so every imported object gets a Geometry
Nodes modifier that turns its vertices into a point cloud (radius from the ``_scale`` attribute times
a user factor) with a material that shows each point's colour and opacity. The modifier is display
only: the glTF/FBX exporters skip unapplied modifiers, so exported files carry the raw vertices,
shape keys and attributes. The node group and the material are shared by all results and reused.
"""

from __future__ import annotations

import bpy

NODE_GROUP_NAME = "GenMOJO Points"
MATERIAL_NAME = "GenMOJO Points"
MODIFIER_NAME = "GenMOJO Points"
COLOR_ATTRIBUTE = "Color"
OPACITY_ATTRIBUTE = "_opacity"
SCALE_ATTRIBUTE = "_scale"
RADIUS_SOCKET = "Radius Factor"


def points_material() -> bpy.types.Material:
    """Emission coloured by the ``Color`` attribute, mixed with transparency by ``_opacity``."""
    mat = bpy.data.materials.get(MATERIAL_NAME)
    if mat is not None:
        return mat
    mat = bpy.data.materials.new(MATERIAL_NAME)
    mat.use_nodes = True
    mat.surface_render_method = "DITHERED"
    nt = mat.node_tree
    nt.nodes.clear()
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    col = nt.nodes.new("ShaderNodeAttribute")
    col.attribute_type = "GEOMETRY"
    col.attribute_name = COLOR_ATTRIBUTE
    opa = nt.nodes.new("ShaderNodeAttribute")
    opa.attribute_type = "GEOMETRY"
    opa.attribute_name = OPACITY_ATTRIBUTE
    emit = nt.nodes.new("ShaderNodeEmission")
    clear = nt.nodes.new("ShaderNodeBsdfTransparent")
    mix = nt.nodes.new("ShaderNodeMixShader")
    nt.links.new(col.outputs["Color"], emit.inputs["Color"])
    nt.links.new(opa.outputs["Fac"], mix.inputs["Fac"])
    nt.links.new(clear.outputs["BSDF"], mix.inputs[1])
    nt.links.new(emit.outputs["Emission"], mix.inputs[2])
    nt.links.new(mix.outputs["Shader"], out.inputs["Surface"])
    for i, node in enumerate((col, opa, emit, clear, mix, out)):
        node.location = (200 * (i // 2), -200 * (i % 2))
    return mat


def points_node_group() -> bpy.types.NodeTree:
    """Mesh to Points with radius = ``_scale`` x factor, then the shared points material."""
    ng = bpy.data.node_groups.get(NODE_GROUP_NAME)
    if ng is not None and ng.bl_idname == "GeometryNodeTree":
        return ng
    ng = bpy.data.node_groups.new(NODE_GROUP_NAME, "GeometryNodeTree")
    ng.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    factor = ng.interface.new_socket(RADIUS_SOCKET, in_out="INPUT", socket_type="NodeSocketFloat")
    factor.default_value = 1.0
    factor.min_value = 0.0
    ng.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    n = ng.nodes
    gin, gout = n.new("NodeGroupInput"), n.new("NodeGroupOutput")
    scale = n.new("GeometryNodeInputNamedAttribute")
    scale.data_type = "FLOAT"
    scale.inputs["Name"].default_value = SCALE_ATTRIBUTE
    mul = n.new("ShaderNodeMath")
    mul.operation = "MULTIPLY"
    to_points = n.new("GeometryNodeMeshToPoints")
    set_mat = n.new("GeometryNodeSetMaterial")
    set_mat.inputs["Material"].default_value = points_material()
    L = ng.links
    L.new(scale.outputs["Attribute"], mul.inputs[0])
    L.new(gin.outputs[RADIUS_SOCKET], mul.inputs[1])
    L.new(gin.outputs["Geometry"], to_points.inputs["Mesh"])
    L.new(mul.outputs["Value"], to_points.inputs["Radius"])
    L.new(to_points.outputs["Points"], set_mat.inputs["Geometry"])
    L.new(set_mat.outputs["Geometry"], gout.inputs["Geometry"])
    for i, node in enumerate((gin, scale, mul, to_points, set_mat, gout)):
        node.location = (180 * i, 0)
    return ng


def add_points_display(obj: bpy.types.Object) -> bpy.types.Modifier:
    """Attach the shared point-display modifier to a vertex-only mesh object."""
    mod = obj.modifiers.new(MODIFIER_NAME, "NODES")
    mod.node_group = points_node_group()
    return mod
